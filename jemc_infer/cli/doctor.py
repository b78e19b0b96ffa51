"""``jemc-infer doctor``: what this machine can run, and why not where it cannot."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Annotated, Any

import typer

from jemc_infer.errors import INSTALL

app = typer.Typer()

PACKAGES = {  # import name → distribution names to look for (what to install: jemc_infer.errors.INSTALL)
    "numpy": ("numpy",),
    "av": ("av",),
    "numkong": ("numkong",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "torch": ("torch",),
    "torchvision": ("torchvision",),
    "onnx": ("onnx",),
    "onnxscript": ("onnxscript",),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12"),
    "pycuda": ("pycuda",),
}


def _version(dists: tuple[str, ...]) -> str | None:
    import importlib.metadata as md  # imported here: every command's start-up would pay ~15 ms for it

    for d in dists:
        try:
            return f"{md.version(d)} ({d})" if d != dists[0] else md.version(d)
        except md.PackageNotFoundError:
            continue
    return None


def versions() -> dict[str, Any]:
    """jemc-infer's, Python's and each package's installed version (None: not installed), read
    from the installed metadata: nothing is imported, so it is instant."""
    import platform

    from jemc_infer import __version__

    return {"jemc_infer": __version__, "python": platform.python_version(),
            "packages": {name: _version(dists) for name, dists in PACKAGES.items()}}


def _probe(name: str) -> str | None:
    """None if it imports, else the reason it does not (first line of the error)."""
    try:
        if name == "pycuda":
            importlib.import_module("pycuda.driver")
        else:
            importlib.import_module(name)
    except Exception as err:  # noqa: BLE001 - any failure is a diagnosis here
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def diagnose() -> dict[str, Any]:
    """Everything doctor reports, as data."""
    import importlib.metadata as md
    import platform

    from jemc_infer import __version__

    report: dict[str, Any] = {"python": f"{platform.python_version()} ({sys.executable})", "jemc_infer": __version__,
                              "platform": platform.platform(), "packages": {}}
    for name, version in versions()["packages"].items():
        problem = _probe(name) if version else "not installed"
        hint = INSTALL.get(name, "a core dependency: reinstall jemc-infer")
        report["packages"][name] = {"version": version, "ok": problem is None, "reason": problem, "hint": None if problem is None else hint}
    if report["packages"]["onnxruntime"]["ok"]:
        import onnxruntime

        report["onnxruntime_providers"] = onnxruntime.get_available_providers()
    if len(md.packages_distributions().get("onnxruntime", [])) > 1:
        report["warning"] = "onnxruntime and onnxruntime-gpu are both installed: they overwrite each other; uninstall both, reinstall one"
    from jemc_infer.index.compact import unavailable

    report["compact_scan"] = unavailable() or "exact here (NumKong's int8 product)"
    report["cuda"] = _cuda(report)
    return report


def _cuda(report: dict[str, Any]) -> dict[str, Any]:
    import shutil
    import subprocess

    out: dict[str, Any] = {"devices": []}
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            res = subprocess.run([smi, "--query-gpu=name,compute_cap,memory.total,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            out["devices"] = [line.strip() for line in res.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.TimeoutExpired) as err:
            out["reason"] = f"nvidia-smi failed: {err}"
    else:
        out["reason"] = "no NVIDIA driver (nvidia-smi not found)"
    if report["packages"]["torch"]["ok"]:
        import torch

        out["torch_cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            out["torch_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return out


@app.command()
def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False) -> None:
    """List Python, packages, execution providers, the int8 scan, CUDA devices, TensorRT and pycuda,
    with the reason for anything missing."""
    report = diagnose()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"python       {report['python']}")
    typer.echo(f"jemc-infer   {report['jemc_infer']}")
    for name, p in report["packages"].items():
        state = p["version"] if p["ok"] else f"MISSING - {p['reason']}; {p['hint']}" if p["version"] is None else f"{p['version']} BROKEN - {p['reason']}"
        typer.echo(f"{name:<12} {state}")
    if "onnxruntime_providers" in report:
        typer.echo(f"providers    {', '.join(report['onnxruntime_providers'])}")
    typer.echo(f"int8 scan    {report['compact_scan']}")
    cuda = report["cuda"]
    typer.echo(f"cuda         {', '.join(cuda['devices']) if cuda['devices'] else cuda.get('reason', 'no devices')}")
    if "torch_cuda" in cuda:
        typer.echo(f"torch cuda   {cuda.get('torch_devices') or 'not available'}")
    if "warning" in report:
        typer.echo(f"WARNING      {report['warning']}")
