"""The simulation twin: MuJoCo models of the robots (robots/<name>/twin.xml), their tasks,
and an in-process robot over them (`--sim direct`)."""
