"""Records where the SpargeRing checkout is, so that an installed `spargering` finds the library that
`launch/setup.sh` built there (`.build/release/libSpargeC.so`). Pure Python: nothing is compiled."""
import os

from setuptools import setup
from setuptools.command.build_py import build_py


class RecordCheckout(build_py):
    def run(self):
        super().run()
        checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        # Only a real checkout (pip may build from a copy elsewhere): then the library is found another way.
        found = os.path.isfile(os.path.join(checkout, "Package.swift"))
        target = os.path.join(self.build_lib, "spargering", "_checkout.py")
        with open(target, "w") as f:
            f.write("# Written at install time: the SpargeRing checkout this package was installed from.\n")
            f.write(f"CHECKOUT = {checkout!r}\n" if found else "CHECKOUT = None\n")


setup(cmdclass={"build_py": RecordCheckout})
