"""A full disk, or a write refused past a file's creation, outside the episode store: the run's
log file, the output probes, exports, atomic writes, bundles, calibrations, the bench's ledgers
and TensorBoard. A full disk is made without a mount: /dev/full (every write ENOSPC) for one
file, a file-size limit (RLIMIT_FSIZE: EFBIG past it) in a subprocess for a folder's files."""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import subprocess_env

FULL = Path("/dev/full")  # opens, and refuses every write: ENOSPC

pytestmark = pytest.mark.skipif(not FULL.exists(), reason="no /dev/full on this system")


def run_limited(code: str, limit_bytes: int, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Python `code` (argv[1:] = `args`) where no file may grow past `limit_bytes`: a write
    beyond it fails with EFBIG, as a full disk's does with ENOSPC (Python ignores SIGXFSZ)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return subprocess.run([sys.executable, "-B", "-c", code, *args], env=subprocess_env(), capture_output=True,
                          text=True, timeout=120, preexec_fn=limit, check=False)


# -- 1: the run's log file ---------------------------------------------------------------

def test_a_log_file_that_cannot_be_written_is_said_once_and_keeps_the_exit_status(capsys, caplog):
    """deploy on a full disk: every record printed "--- Logging error ---" and a traceback over
    the dashboard, and the handler's close raised OSError out of `log_to_file`, the run's exit 1
    becoming a traceback's 2. One line now, and the run's own exit stands."""
    from shallowpi.tui.launch import RUN_LOG, log_to_file

    caplog.set_level(logging.INFO)
    with pytest.raises(SystemExit) as ended, log_to_file(FULL) as path:
        assert path == FULL
        for n in range(3):
            logging.getLogger("shallowpi.test").warning("episode %d", n)
            logging.getLogger(RUN_LOG).info("line %d", n)
        raise SystemExit(1)
    assert ended.value.code == 1
    assert "Logging error" not in capsys.readouterr().err
    said = [r.getMessage() for r in caplog.records if "no longer written" in r.getMessage()]
    assert said == ["log file /dev/full: No space left on device; no longer written"]
    assert not [h for h in logging.getLogger().handlers + logging.getLogger(RUN_LOG).handlers
                if getattr(h, "baseFilename", None) == str(FULL)]


def test_a_log_file_whose_last_lines_cannot_be_flushed_does_not_raise_from_its_close(tmp_path):
    """Records under the buffer's size all fit, then the disk fills: only the close's flush
    fails. It is said in one line, and the block's own result stands."""
    code = """if True:
        import logging, sys
        from pathlib import Path
        from shallowpi.tui.launch import log_to_file
        logging.basicConfig(level=logging.WARNING)
        with log_to_file(Path(sys.argv[1])):
            logging.getLogger("shallowpi.test").warning("%s", "x" * 3000)
            sys.stderr.write("in the block\\n")
        sys.exit(3)
    """
    log = tmp_path / "run.log"
    done = run_limited(code, 100, str(log))
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and "Logging error" not in done.stderr, done.stderr
    assert done.stderr.count("no longer written") == 1, done.stderr
    assert f"log file {log}: File too large; no longer written" in done.stderr


# -- 4: atomic writes name the file a full disk refused ---------------------------------

def test_a_write_refused_past_its_creation_names_the_file(tmp_path):
    """replace_bytes' ENOSPC from write or close names no file (Python gives a file object's
    errors none): the CLI's line could not say which disk. It names the file it replaces."""
    code = """if True:
        import sys
        from shallowpi.durable_files import PARTIAL_SUFFIX, replace_bytes
        from pathlib import Path
        try:
            replace_bytes(sys.argv[1], b"x" * 100_000)
        except OSError as exc:
            print(exc.errno, exc.filename)
        print(sorted(p.name for p in Path(sys.argv[1]).parent.iterdir()))
    """
    target = tmp_path / "calibration.json"
    done = run_limited(code, 1000, str(target))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{errno.EFBIG} {target}", "[]"]


@pytest.fixture
def full_tmpfs(tmp_path):
    """A 512 KiB tmpfs at tmp_path/full, filled to its last byte by `filler`; unmounted after.
    Skips where mount is not permitted (not root, a container without CAP_SYS_ADMIN)."""
    mount = tmp_path / "full"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True,
                          check=False) if os.geteuid() == 0 else None
    if made is None or made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with open(mount / "filler", "wb", buffering=0) as filler, pytest.raises(OSError) as full:
            while True:
                filler.write(b"\0" * 4096)
        assert full.value.errno == errno.ENOSPC
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_an_output_on_a_disk_without_a_byte_free_is_refused_before_the_work(tmp_path):
    """ready_output's probe made an empty file (no block), so a full disk passed and deploy
    --json ran its episodes, then lost the report. It writes and syncs a byte now."""
    code = """if True:
        import sys
        from pathlib import Path
        from shallowpi.cli import ready_output
        from shallowpi.errors import PlatformError
        try:
            ready_output(Path(sys.argv[1]), "--json")
        except PlatformError as exc:
            print(exc)
    """
    done = run_limited(code, 0, str(tmp_path / "runs" / "run.json"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"cannot write {tmp_path / 'runs' / 'run.json'}: the file is larger than the file "
                                   "system (or ulimit -f) allows; give --json on another disk")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["runs"]


def test_an_output_on_a_full_or_nearly_full_disk_is_refused_naming_its_folder(full_tmpfs):
    from shallowpi.cli import ready_output
    from shallowpi.errors import PlatformError

    with pytest.raises(PlatformError) as refused:
        ready_output(full_tmpfs / "run.json", "--json")
    assert str(refused.value) == (f"cannot write {full_tmpfs / 'run.json'}: no space left on the device ({full_tmpfs}); "
                                  "free space there or give --json on another disk")
    from shallowpi.cli import OUTPUT_FREE_FLOOR

    os.truncate(full_tmpfs / "filler", 0)  # 512 KiB free: a byte fits, a report may not
    assert os.statvfs(full_tmpfs).f_bavail * os.statvfs(full_tmpfs).f_frsize < OUTPUT_FREE_FLOOR
    with pytest.raises(PlatformError) as refused:
        ready_output(full_tmpfs / "videos", "--out", folder=True)
    assert str(refused.value) == (f"cannot write {full_tmpfs / 'videos'}: no space left on the device ({full_tmpfs / 'videos'}: "
                                  "512 KiB free, under the 1 MiB an output needs); free space there or give --out on "
                                  "another disk")
    assert sorted(p.name for p in full_tmpfs.iterdir()) == ["filler", "videos"]


# -- 3: an export that meets a full disk -------------------------------------------------

def test_an_onnx_export_to_a_full_disk_is_the_disks_error_naming_the_file():
    """The graph's save on a full disk (ENOSPC, no file named) was "exporting the full graph
    failed: OSError ...; deploy with --backend torch, or report it": an exporter bug to
    deploy around. It is the OSError, naming the file, for the CLI's one line on the disk."""
    import torch

    from shallowpi.deploy import export_onnx

    class Doubling(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    with pytest.raises(OSError) as refused:
        export_onnx._export(Doubling(), (torch.ones(2),), FULL, ["x"], ["y"])
    assert (refused.value.errno, refused.value.filename) == (errno.ENOSPC, str(FULL))


# -- 4: a bundle's files -------------------------------------------------------------------

def test_a_bundle_manifest_refused_past_its_creation_names_the_file(tmp_path):
    """write_manifest's write_text on a full disk raised ENOSPC naming no file."""
    code = """if True:
        import sys
        from pathlib import Path
        from shallowpi.deploy.bundle import write_manifest
        folder = Path(sys.argv[1])
        for n in range(40):
            (folder / f"file{n:02d}.bin").write_bytes(bytes([n]))
        try:
            write_manifest(folder)
        except OSError as exc:
            print(exc.errno, exc.filename)
    """
    done = run_limited(code, 1000, str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(errno.EFBIG), str(tmp_path / "manifest.json")]


def test_a_bundle_whose_disk_fills_after_its_weights_names_the_bundle(full_tmpfs, tmp_path):
    """The weights' copy fits, then config.json's write_text meets ENOSPC naming no file:
    build_bundle's error names the bundle it builds, and leaves nothing behind."""
    from deploy_fixtures import tiny_checkpoint
    from shallowpi.deploy.bundle import build_bundle

    checkpoint = tiny_checkpoint(tmp_path / "ckpt")
    page = os.statvfs(full_tmpfs).f_frsize
    wanted = -(-(checkpoint / "model.safetensors").stat().st_size // page) * page  # the copy fits, no byte more
    filler = full_tmpfs / "filler"
    os.truncate(filler, filler.stat().st_size // page * page - wanted)  # its whole pages, less the copy's
    assert os.statvfs(full_tmpfs).f_bavail * page == wanted
    with pytest.raises(OSError) as refused:
        build_bundle(checkpoint, full_tmpfs / "ckpt.bundle", graphs=())
    assert (refused.value.errno, refused.value.filename) == (errno.ENOSPC, str(full_tmpfs / "ckpt.bundle"))
    assert sorted(p.name for p in full_tmpfs.iterdir()) == ["filler"]


# -- 5: calibrate ----------------------------------------------------------------------------

def _calibrate(robots: Path, limit_bytes: int, ports: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`platform calibrate --robot arm` into `robots`, no file to grow past `limit_bytes`."""
    from conftest import platform_cmd

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return subprocess.run(platform_cmd("calibrate", "--robot", "arm", "--ports", ports), input=stdin,
                          env=subprocess_env(SHALLOWPI_ROBOTS_DIR=str(robots)), capture_output=True, text=True,
                          timeout=200, preexec_fn=limit, check=False)


def test_calibrate_refuses_a_folder_it_cannot_write_before_any_bus_opens(tmp_path):
    """A full or read-only calibration folder was first met at the save, after the operator
    had swept every arm. It is probed first: here the ports do not even exist."""
    done = _calibrate(tmp_path / "robots", 0, f"follower={tmp_path / 'no-port'},leader={tmp_path / 'no-port2'}")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (f"error: cannot write {tmp_path / 'robots' / 'arm'}: the file is larger than the "
                                   "file system (or ulimit -f) allows; give SHALLOWPI_ROBOTS_DIR on another disk")
    assert done.stdout == ""


def test_calibrate_whose_save_fails_prints_the_measured_calibration(tmp_path):
    """The disk fills during the sweep (here: the probe's byte fits, the file does not): the
    save's error comes with the calibration measured, as the file it would have been."""
    import json
    import time

    from conftest import platform_cmd
    from dxl_fixtures import emulated

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    with emulated("arm") as (spec, chains):
        ports = ",".join(f"{name}={bus.port}" for name, bus in spec.buses.items())
        calibrate = subprocess.Popen(platform_cmd("calibrate", "--robot", "arm", "--ports", ports),
                                     env=subprocess_env(SHALLOWPI_ROBOTS_DIR=str(tmp_path / "robots")),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     preexec_fn=limit)
        out = b""
        try:
            for asked, arm in enumerate(("follower", "leader"), start=1):  # the operator's hand, then Enter
                for prompt, moves in ((b"zero pose", (0.0,)), (b"Move every joint", (0.5, -0.5, 0.0))):
                    while out.count(prompt) < asked:
                        chunk = os.read(calibrate.stdout.fileno(), 4096)
                        assert chunk, calibrate.stderr.read().decode()
                        out += chunk
                    for position in moves:
                        for servo in chains[arm].servos.values():
                            servo.plant.move_to(position)
                        time.sleep(0.1)
                    calibrate.stdin.write(b"\n")
                    calibrate.stdin.flush()
            rest, err = calibrate.communicate(timeout=120)
        finally:
            if calibrate.poll() is None:
                calibrate.kill()
                calibrate.wait()
    out = (out + rest).decode()
    assert calibrate.returncode != 0, err
    assert str(tmp_path / "robots" / "arm" / "calibration.json") in err.decode().strip().splitlines()[-1]
    said, measured = out.split("write this to ", 1)[1].split("\n", 1)
    assert said.startswith(str(tmp_path / "robots" / "arm" / "calibration.json"))
    saved = json.loads(measured)
    assert saved["robot"] == "arm" and sorted(saved["arms"]) == ["follower", "leader"]
    assert not (tmp_path / "robots" / "arm" / "calibration.json").exists()


# -- 6: the bench's ledgers ------------------------------------------------------------------

BENCH = Path(__file__).resolve().parents[1] / "tools" / "bench"


def test_a_figures_ledger_whose_write_fails_keeps_its_last_whole_version(tmp_path):
    """figures.py rewrote figures.json in place: on a full disk it was left truncated, and
    the next run died on its JSON. It is replaced whole, or not at all."""
    ledger = {"camera_views": {"returncode": 0, "section": "x" * 300, "seconds": 1.0}}
    (tmp_path / "figures.json").write_text(json.dumps(ledger, indent=2))
    done = run_limited(f"import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path({str(BENCH / 'figures.py')!r}, "
                       "run_name='__main__')", 200, "figures.py", "--only", "distill_flops", "--out", str(tmp_path))
    assert done.returncode != 0
    assert json.loads((tmp_path / "figures.json").read_text()) == ledger
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures.json"]


def test_deploy_strategies_provenance_whose_write_fails_keeps_its_last_whole_version(tmp_path):
    """deploy_strategies.py rewrote provenance.json in place, as figures.py its ledger."""
    policy, out = tmp_path / "ckpt", tmp_path / "out"
    policy.mkdir()
    out.mkdir()
    (policy / "model.safetensors").write_bytes(b"weights")
    old = {"policy_sha256": "0" * 64, "overrides": [], "platform": "x" * 300}
    (out / "provenance.json").write_text(json.dumps(old))
    done = run_limited(f"import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path({str(BENCH / 'deploy_strategies.py')!r}, "
                       "run_name='__main__')", 100, "deploy_strategies.py", "--policy", str(policy), "--out", str(out))
    assert done.returncode != 0
    assert json.loads((out / "provenance.json").read_text()) == old
    assert sorted(p.name for p in out.iterdir()) == ["provenance.json"]


# -- 7: TensorBoard --------------------------------------------------------------------------

def _train_under_a_file_limit(run: Path, limit_bytes: int, tensorboard: bool) -> subprocess.CompletedProcess:
    """Six steps of a tiny policy into `run`, every file it writes capped at `limit_bytes`
    (EFBIG past it); its stdout says "raised ERRNO FILENAME" for the OSError that ended it,
    logging's warnings on its stderr."""
    code = f"""if True:
        import logging, sys
        from pathlib import Path
        import torch
        torch.set_num_threads(1)
        from policy_fakes import FakeChunks, tiny_policy
        from shallowpi.train.objective import FlowMatchingObjective
        from shallowpi.train.trainer import TrainConfig, Trainer
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        run = Path(sys.argv[1])
        cfg = TrainConfig(steps=6, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=2, save_every=6, log_every=1,
                          workers=0, progress=False, tensorboard={tensorboard})
        try:
            Trainer(FlowMatchingObjective(tiny_policy(FakeChunks())), FakeChunks(), cfg, run).fit()
        except OSError as exc:
            print("raised", exc.errno, exc.filename)
    """
    return subprocess.run([sys.executable, "-B", "-c", code, str(run)], capture_output=True, text=True, timeout=300,
                          env=subprocess_env(PYTHONPATH=os.pathsep.join([str(Path(__file__).parent),
                                                                       subprocess_env()["PYTHONPATH"]])),
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE,
                                                                (limit_bytes, resource.RLIM_INFINITY)),
                          check=False)


def test_tensorboard_on_a_full_disk_is_one_warning_and_never_hides_the_checkpoints_error(tmp_path):
    """TensorBoard's writer raised the full disk's OSError from add_scalar (the run ended
    over a view of metrics.jsonl) and again from its close in fit's finally, over the
    checkpoint's error that named its path. Here the event file fills first (its limit: 1 KB
    a file), then the last checkpoint fails: that is the error, TensorBoard one warning."""
    run = tmp_path / "run"
    done = _train_under_a_file_limit(run, 1000, tensorboard=True)
    assert done.returncode == 0, done.stderr
    [raised] = done.stdout.splitlines()
    assert raised.startswith(f"raised {errno.EFBIG} {run / 'checkpoints'}"), raised
    assert "tfevents" not in raised
    warnings = [line for line in done.stderr.splitlines() if "TensorBoard" in line]
    assert warnings == [f"WARNING TensorBoard logs in {run / 'tb'} stopped: File too large; training goes on without "
                        "them (metrics.jsonl has every logged step)"], done.stderr


def test_a_metrics_line_the_disk_refuses_names_metrics_jsonl(tmp_path):
    """The metrics.jsonl append's ENOSPC (EFBIG here) from the write named no file: the CLI
    could only say "free space on the disk this command writes to"."""
    run = tmp_path / "run"
    done = _train_under_a_file_limit(run, 300, tensorboard=False)  # two lines' worth
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"raised {errno.EFBIG} {run / 'metrics.jsonl'}"], (done.stdout, done.stderr)


# -- 8: keep_last and the free-space warning -------------------------------------------------

def test_the_free_space_warning_says_keep_last_needs_room_for_one_more():
    """keep_last=N prunes after the new save is whole, so it needs room for N + 1; at
    keep_last=1 the warning advised "keep fewer checkpoints", which there are not."""
    from shallowpi.train import checkpoint

    run, gb = Path("/runs/kitchen-pi0"), 10**9
    at_one = checkpoint.space_warning(run, 50 * gb, 40 * gb, "policy.train", keep_last=1)
    assert at_one.endswith("the next save may fail for lack of space; free some (policy.train.keep_last=1 keeps one, "
                           "but the previous is removed only after the new one is saved: the disk needs room for two)")
    assert "keep fewer" not in at_one
    assert checkpoint.space_warning(run, 50 * gb, 40 * gb, "policy.train", keep_last=3).endswith(
        "free some, or keep fewer checkpoints (policy.train.keep_last=3; keep_last=N needs room for N + 1, the old "
        "removed only after the new one is saved)")

