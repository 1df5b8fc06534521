from imbtui.cli import run

run()
