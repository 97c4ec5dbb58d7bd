"""The launcher's local config: one small JSON file per device, in the config directory.

The directory is `--config-dir`, else `LIBRARY_CONFIG_DIR`, else `~/.config/library-client` (two directories
are two devices: tests simulate a second device with a second one). `config.json` (mode 0600, it may hold
the token):

    {
      "target": "127.0.0.1:8080",             # the service's gRPC edge (`login --target`)
      "token": "eyJ…",                          # bearer token (`login`)
      "deviceId": "living-room-pc",            # this device's id in sessions, saves and settings
      "products": {"7d3f7f4e-…": {"saveDir": "/home/me/.local/share/Game/saves"}}
    }

Every key is optional. What the command line or the environment says wins over the file (`--token`,
`LIBRARY_TOKEN`, `--target`, `LIBRARY_TARGET`, `LIBRARY_DEVICE_ID`). The device's state (which save versions
it last pushed or pulled, `saves.json`; where products are installed, `installs.json`, written by `install`)
lives beside it, unless `LIBRARY_STATE_DIR` says otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from client.sdk.connection import ConfigError

FILE_NAME = "config.json"


@dataclass(frozen=True)
class ProductPaths:
    """Where a product keeps things on this device: its cloud-synced save directory."""

    save_dir: Path | None = None


@dataclass(frozen=True)
class LauncherConfig:
    target: str = ""
    token: str = ""
    device_id: str = ""
    products: dict[str, ProductPaths] = field(default_factory=dict)

    def product(self, product_id: str) -> ProductPaths:
        return self.products.get(product_id.lower(), ProductPaths())

    def with_product(self, product_id: str, *, save_dir: Path) -> LauncherConfig:
        """A copy with the product's save directory set."""
        paths = replace(self.product(product_id), save_dir=save_dir.expanduser().absolute())
        return replace(self, products={**self.products, _product_key(product_id): paths})

    def to_json(self) -> dict:
        document: dict = {}
        for key, value in (("target", self.target), ("token", self.token), ("deviceId", self.device_id)):
            if value:
                document[key] = value
        products = {}
        for product_id, paths in sorted(self.products.items()):
            products[product_id] = {"saveDir": str(paths.save_dir)} if paths.save_dir else {}
        if products:
            document["products"] = products
        return document


def _product_key(product_id: str) -> str:
    try:
        return str(uuid.UUID(product_id))
    except ValueError:
        raise ConfigError(f"'{product_id}' is not a product id (a UUID)") from None


def parse(text: str, source: str = FILE_NAME) -> LauncherConfig:
    """The config in `text`; a malformed file is a ConfigError naming the file and what is wrong."""
    try:
        document = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise ConfigError(f"{source} is not valid JSON ({exc}); fix or delete it") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source} must hold a JSON object")

    def text_of(key: str, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {where}{key} must be a string")
        return value

    values = {}
    for key, name in (("target", "target"), ("token", "token"), ("deviceId", "device_id")):
        if key in document:
            values[name] = text_of(key, document[key], "")
    products = document.get("products", {})
    if not isinstance(products, dict):
        raise ConfigError(f"{source}: products must be an object of product id → directories")
    parsed = {}
    for product_id, entry in products.items():
        where = f"products.{product_id}."
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: products.{product_id} must be an object")
        try:
            key = _product_key(product_id)
        except ConfigError:
            raise ConfigError(f"{source}: products key '{product_id}' is not a product id (UUID)") from None
        parsed[key] = ProductPaths(
            save_dir=Path(text_of("saveDir", entry["saveDir"], where)) if "saveDir" in entry else None
        )
    return LauncherConfig(**values, products=parsed)


def config_dir(explicit: str | os.PathLike | None = None) -> Path:
    """`--config-dir`, else LIBRARY_CONFIG_DIR, else ~/.config/library-client."""
    chosen = explicit or os.environ.get("LIBRARY_CONFIG_DIR")
    return Path(chosen).expanduser() if chosen else Path.home() / ".config" / "library-client"


def state_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where this device's state lives: LIBRARY_STATE_DIR, else a config directory that was chosen (a
    directory per device), else ~/.local/state/library-client (where the SDK keeps it by default)."""
    chosen = os.environ.get("LIBRARY_STATE_DIR")
    if chosen:
        return Path(chosen).expanduser()
    if explicit or os.environ.get("LIBRARY_CONFIG_DIR"):
        return config_dir(explicit)
    return Path.home() / ".local" / "state" / "library-client"


def load(directory: Path) -> LauncherConfig:
    """The config in `directory` (an empty one if it has no config file yet)."""
    path = directory / FILE_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return LauncherConfig()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse(text, str(path))


def save(directory: Path, config: LauncherConfig) -> Path:
    """Writes the config atomically, readable by its owner only (it may hold the token)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE_NAME
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{FILE_NAME}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(config.to_json(), f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return path
