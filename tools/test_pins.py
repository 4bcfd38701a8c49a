"""The pinned versions are written once: ONNX Runtime's in tools/assets.py.

    python3 -m unittest -q tools.test_pins

The Rust code loads the library through the unversioned link assets.py makes, so
it names no version; the Dockerfile needs the version as a build argument (its
CUDA stage downloads the matching onnxruntime-gpu wheel), and this checks that its
default is assets.py's.
"""

import re
import unittest
from pathlib import Path

from tools import assets

REPO = Path(__file__).resolve().parent.parent


class Pins(unittest.TestCase):
    def test_the_dockerfile_builds_the_version_assets_pins(self):
        text = (REPO / "Dockerfile").read_text()
        args = re.findall(r"^ARG ORT_VERSION=(\S+)$", text, re.M)
        self.assertEqual(args, [assets.ORT_VERSION], "Dockerfile's ARG ORT_VERSION default")

    def test_no_rust_source_names_an_onnxruntime_version(self):
        named = []
        for path in REPO.glob("*/src/**/*.rs"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"libonnxruntime\.so\.\d", line):
                    named.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
        self.assertEqual(named, [], "load the unversioned link (tools/assets.py ORT_LINK) instead")

    def test_the_venv_pins_the_same_onnxruntime(self):
        self.assertIn(f"onnxruntime=={assets.ORT_VERSION}", assets.VENV_REQUIREMENTS)


if __name__ == "__main__":
    unittest.main()
