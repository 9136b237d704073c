import sys

from core import paths

paths.private_files()   # before anything is written: the database, job folders, exports are this user's alone

from core.cli import main  # noqa: E402

sys.exit(main())
