# The lab's fixtures (lab, clean_lab, light_lab) for every test directory.
pytest_plugins = ["tests.lab.fixtures"]
