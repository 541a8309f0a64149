"""reglab's configs, installed as the package `reglab.conf`: Hydra reads them as pkg://reglab.conf.

conf/ is a package only so that setuptools ships its YAML files (see setup.py) and that
`importlib.resources.files("reglab.conf")` finds them; it holds no code.
"""
