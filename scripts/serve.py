"""Start the studio's web app: ``python scripts/serve.py [streamlit options]``.

Why not plain ``streamlit run app.py``: Streamlit treats an app that has a ``pages/`` folder as an
old-style multipage app until some session has run ``app.py`` (whose ``st.navigation`` switches
it over). After a restart, a teammate whose first request is a bookmarked ``/train`` would get
that page alone, without ``app.py`` — without the sidebar, and without the job supervisor. Saying
before the server starts that this app navigates with ``st.navigation`` closes that gap.

The job supervisor also starts here, before the server, so that jobs queued before a restart run on
although nobody has opened the studio yet. ``app.py`` finds the same thread and does not start another.
"""
import sys
from pathlib import Path

from streamlit.runtime.pages_manager import PagesManager
from streamlit.web import cli

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "app.py"
DEFAULTS = ["--server.headless", "true", "--browser.gatherUsageStats", "false",
            # a running studio does not reload code on file changes; workers write a lot of files
            "--server.fileWatcherType", "none"]

if __name__ == "__main__":
    PagesManager.uses_pages_directory = False
    sys.path.insert(0, str(REPO))
    from core import jobs

    jobs.start_background(interval=2.0)
    sys.argv = ["streamlit", "run", str(APP), *DEFAULTS, *sys.argv[1:]]
    sys.exit(cli.main())
