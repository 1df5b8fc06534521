"""The app's screens: runs, run, compare, SQL, and the small modal dialogs."""
