"""What a model file may make the server run: model files are data, code comes from the operator.

A ``.keras`` file records the module of each custom class it uses, and a
SavedModel's graph holds ops. Neither chooses what runs: a recorded module is
imported only when it is an installed package (a regular module or package
in the interpreter's site-packages) or ``MODEL_CODE_MODULES`` names it (or a
package above it), never from the model store, a repository, the cache or
the working directory, which Python's path would otherwise reach as
namespace packages (``models.evil.1.payload``). A graph runs only ops that
stay inside the process (app/runtime/graph_ops.py), plus those
``ALLOWED_GRAPH_OPS`` names.
"""

import importlib
import importlib.util
import re
import site
import sys
import sysconfig
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

# A module's dotted name, as MODEL_CODE_MODULES lists them.
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
# A TensorFlow op type, as ALLOWED_GRAPH_OPS lists them.
OP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class CodePolicy:
    """The modules a model file's custom classes may come from, and the graph ops allowed
    beyond the ones that stay inside the process."""

    modules: tuple[str, ...] = ()
    graph_ops: frozenset[str] = frozenset()

    @classmethod
    def from_environ(cls, environ) -> "CodePolicy":
        """MODEL_CODE_MODULES and ALLOWED_GRAPH_OPS (comma-separated); ``ValueError`` naming
        the setting and the entry that is not a name."""
        return cls(
            tuple(_names(environ, "MODEL_CODE_MODULES", MODULE_NAME)),
            frozenset(_names(environ, "ALLOWED_GRAPH_OPS", OP_NAME)),
        )

    def names(self, module: str) -> bool:
        """Whether MODEL_CODE_MODULES names ``module`` or a package above it."""
        return any(module == named or module.startswith(f"{named}.") for named in self.modules)


# Installed packages only, no graph op beyond the default: what a setting left empty gives.
INSTALLED_ONLY = CodePolicy()


def _names(environ, setting: str, pattern: re.Pattern) -> list[str]:
    entries = [entry.strip() for entry in (environ.get(setting) or "").split(",")]
    for entry in entries:
        if entry and not pattern.fullmatch(entry):
            raise ValueError(f"{setting}: {entry!r} is not a name")
    return [entry for entry in entries if entry]


def installed(module: str) -> bool:
    """Whether ``module``'s top-level package is a regular one in site-packages.

    Only the top level is looked up, which imports nothing: looking up
    ``a.b.c`` would import ``a`` and ``a.b``, running their code.
    """
    top = module.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.origin or not spec.has_location:
        return False  # Not found, or a namespace package: a bare directory anywhere.
    origin = Path(spec.origin).resolve()
    return any(origin.is_relative_to(directory) for directory in site_directories())


def site_directories() -> list[Path]:
    paths = sysconfig.get_paths()
    found = {paths["purelib"], paths["platlib"], *site.getsitepackages()}
    return [Path(directory).resolve() for directory in found]


def import_recorded(custom: list[tuple[str, str | None]], policy: CodePolicy) -> str | None:
    """Import each module a file records for its custom classes, when the policy lets it;
    why not, for the first class whose module it does not, else None.

    A class Keras already knows (its module imported, or registered by the
    operator's own code) needs nothing; a module of the standard library is
    never imported (no Keras class lives there). A Keras 2 file records no
    module: the modules MODEL_CODE_MODULES names are imported first, and a
    class none of them registers is named by Keras' own error.
    """
    import keras

    # The operator's modules first: a Keras 2 file records no module for its classes.
    for module in policy.modules:
        if custom and module not in sys.modules:
            with suppress(Exception):  # One that fails to import is named by Keras' error.
                importlib.import_module(module)
    for name, module in custom:
        if module is None or module in sys.modules:
            continue
        if keras.saving.get_registered_object(name) is not None:
            continue
        if module.split(".")[0] in sys.stdlib_module_names:
            continue
        if not (policy.names(module) or installed(module)):
            return (
                f"class {name!r} names module {module!r}, which is neither an installed "
                "package nor named in MODEL_CODE_MODULES: a model file never chooses the code "
                "that runs; install the module, or name it in MODEL_CODE_MODULES"
            )
        with suppress(Exception):  # A module that fails to import is named by Keras' error.
            importlib.import_module(module)
    return None
