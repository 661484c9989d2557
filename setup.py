"""Packaging that pyproject.toml cannot say on its own (the rest is in pyproject.toml).

The wheel holds every package under server/ (found, so a new subpackage is never left out) and the
top-level web/ folder as the package data `server/_web/`, where server/web.py finds it when the
server runs from an installed wheel. web/node_modules (npm's working folder for updating the
vendored libraries), web/package*.json and the update script stay out of it.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["server", "server.*"]), "server._web"],
    package_dir={"server._web": "web"},
    # package_data alone says which files (no MANIFEST.in): web/'s subfolders are data, not packages
    include_package_data=False,
    package_data={"server._web": ["**/*"]},
    exclude_package_data={"server._web": ["node_modules/*", "package.json", "package-lock.json",
                                          "vendor/update.sh"]},
)
