"""The run report: stats JSON, matplotlib plots (Agg), GIFs (Pillow) and one self-contained index.html.

`ReportRecorder` writes it during a run, off the search's thread; `rebuild_report` writes it again from a
run folder's run.json and saved images (`python -m lib_pinning report RUN_DIR`).
"""

from .rebuild import rebuild_report
from .recorder import ReportRecorder

__all__ = ["ReportRecorder", "rebuild_report"]
