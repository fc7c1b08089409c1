"""Run by AUTOMATIC1111 at start-up and by "Install from URL": pip-installs the extension's missing packages.

Only what is missing is installed, never upgraded; numpy, torch and Pillow are the WebUI's and stay at the
versions it pinned (each install names the installed versions, so pip cannot move them). k-diffusion comes
with the WebUI, and so, usually, does matplotlib (with gradio): its range only matters where it is missing.
DEAP is pinned to the version the extension is tested with.
"""

import importlib.metadata

import launch

# (importable module, pip requirement)
REQUIREMENTS = [
    ("deap", "deap==1.4.4"),
    ("matplotlib", "matplotlib>=3.7"),
]
KEEP = ("numpy", "torch", "Pillow")


def _keep_pins() -> str:
    pins = []
    for name in KEEP:
        try:
            pins.append(f'"{name}=={importlib.metadata.version(name)}"')
        except importlib.metadata.PackageNotFoundError:
            pass
    return " ".join(pins)


for module, requirement in REQUIREMENTS:
    if not launch.is_installed(module):
        launch.run_pip(f'install "{requirement}" {_keep_pins()}', f"sd-prompt-pinning requirement: {requirement}")
