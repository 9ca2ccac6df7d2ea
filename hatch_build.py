"""Hatchling build hook: a wheel carries the browser node's bundle as ``zmesh/web/``.

For every non-editable wheel it runs build_wasm.py into a temporary directory (Node.js
with npm is needed: a clear error says so), and includes the result.  Editable installs
use the checkout's web/dist instead, and build_wasm.py builds the wheel it puts inside the
page with hooks off (``hatchling build --no-hooks``), so nothing recurses.  A wheel without
the page: ``HATCH_BUILD_NO_HOOKS=true pip wheel .``.
"""

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class BrowserBundleHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        self._tmp: str | None = None
        if self.target_name != "wheel" or version == "editable":
            return
        if shutil.which("node") is None or shutil.which("npm") is None:
            raise RuntimeError(
                "building a zmesh wheel needs Node.js 20+ with npm, to assemble the browser "
                "node's bundle (build_wasm.py); install them (Debian: apt-get install nodejs "
                "npm), or set HATCH_BUILD_NO_HOOKS=true for a wheel without the page"
            )
        sys.path.insert(0, self.root)
        import build_wasm  # noqa: PLC0415 (the checkout's script, found through self.root)

        self._tmp = tempfile.mkdtemp(prefix="zmesh-wheel-web-")
        out = Path(self._tmp) / "web"
        try:
            build_wasm.build(out)
        except build_wasm.BuildError as exc:
            raise RuntimeError(f"assembling the browser bundle for the wheel: {exc}") from None
        build_data["force_include"][str(out)] = "zmesh/web"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
