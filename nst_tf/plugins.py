"""Plug-ins: installed packages that add backbones, optimisers or loss terms to every run.

A package names a module under the entry-point group `nst_tf.plugins` (its pyproject.toml:
`[project.entry-points."nst_tf.plugins"] NAME = "module"`); the module registers its parts when
imported, as docs/ARCHITECTURE.md's recipes say. Every entry (the command, the Python API, a
launcher's worker) imports the installed plug-ins before it composes a config, so
`model.backbone=NAME` and `optimizer=NAME` find their parts in whichever process runs them.
"""

from importlib.metadata import entry_points

from nst_tf.errors import UserError

GROUP = "nst_tf.plugins"


def load_plugins() -> list[str]:
    """Import every installed plug-in's module (a no-op for those imported); their names."""
    names = []
    for entry in entry_points(group=GROUP):
        try:
            entry.load()
        except Exception as error:  # one line naming the plug-in, not its traceback
            raise UserError(f"plug-in {entry.name} ({entry.value}) failed to load: "
                            f"{type(error).__name__}: {error}; fix or uninstall it") from error
        names.append(entry.name)
    return names
