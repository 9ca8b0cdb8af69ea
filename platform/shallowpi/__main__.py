"""`python -m shallowpi ...`: the `platform` command, as torchrun, the recorder's dashboard,
the benchmarks and the tests start it."""

from shallowpi.cli import main

# Under `-m`, CPython (3.8 on) ends the process by SIGINT (exit -2, 130 in a shell) if a
# KeyboardInterrupt ever left code run from a string, even one that main caught and handled:
# exec and eval of text set a runtime flag (Python/pythonrun.c, run_eval_code_obj) that
# Py_RunMain reads at exit, where a script's SystemExit skips it (Modules/main.c). A SIGTERM
# landing in a dataclass's generated __init__ as a module was imported turned `train`'s
# "interrupted", exit 130, into a signal death. Each string exec clears the flag first; an
# interrupt that leaves main (an unhandled one) sets it again on its way out (pymain_run_module).
try:
    raise SystemExit(main())
finally:
    exec("")
