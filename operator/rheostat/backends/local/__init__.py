"""Local backend: trials as processes on this machine, the study in SQLite."""
