"""Every rule's conda environment provides what its script imports, pinned as in the lock.

Nothing here runs conda or imports the workflow's libraries: the rules are read from
``rules/*.smk`` as text, the scripts and the ``glioma`` package with :mod:`ast`, the
environments with PyYAML and the lock (``envs/requirements.txt``) as text. For every rule with
a ``script:`` the test follows its imports (module level and inside functions) through the
local package, maps each third-party top-level name to its distribution and asks the rule's
``conda:`` file for it. ``python tests/test_envs.py`` prints the derived table
(docs/environments.md explains it).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from collections import deque
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RULES_DIR = REPO / "rules"
ENVS_DIR = REPO / "envs"
LOCK = ENVS_DIR / "requirements.txt"
#: The one environment for the whole workflow (docs/environments.md).
WORKFLOW_ENV = ENVS_DIR / "workflow.yaml"

#: Import names whose distribution has another name (compared after :func:`canonical`).
IMPORT_TO_DIST = {
    "SimpleITK": "simpleitk",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "yaml": "pyyaml",
    "ants": "antspyx",
    "PIL": "pillow",
    "HD_BET": "hd-bet",
    "cc3d": "connected-components-3d",
    "jinja2": "jinja2",
}

#: conda-forge package names whose PyPI distribution has another name.
CONDA_TO_DIST = {
    "pytorch": "torch",
    "matplotlib-base": "matplotlib",
    "py-opencv": "opencv-python",
}

#: Entries of an environment that are no importable distribution (the interpreter, installers).
NOT_DISTRIBUTIONS = {"python", "pip", "setuptools", "wheel"}

#: Methods that import a library no ``import`` statement names: pandas' Parquet and Excel I/O.
IMPLICIT_CALLS = {
    "read_parquet": "pyarrow",
    "to_parquet": "pyarrow",
    "read_excel": "openpyxl",
    "to_excel": "openpyxl",
}


def canonical(name: str) -> str:
    """A distribution name normalised as PEP 503 does (``HD_BET`` and ``hd-bet`` agree)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------------------------
# Rules


@dataclass
class Rule:
    """One rule definition: where it is, its ``conda:`` file and its ``script:`` (resolved)."""

    name: str
    smk: Path
    line: int
    env: Path | None = None
    script: Path | None = None
    parent: str | None = None  # ``use rule parent as name``
    problems: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{_rel(self.smk)}:{self.line}"


_RULE_RE = re.compile(r"^(?P<indent>[ \t]*)(?:rule|checkpoint)\s+(?P<name>\w+)\s*:")
_USE_RE = re.compile(r"^(?P<indent>[ \t]*)use\s+rule\s+(?P<parent>\w+)\s+as\s+(?P<name>\w+)\b")
_DIRECTIVE_RE = re.compile(r"^(?P<indent>[ \t]*)(?P<key>conda|script)\s*:\s*(?P<rest>.*)$")


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _indent(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())


def _literal(text: str) -> str | None:
    """The string literal ``text`` holds (a trailing comma or comment allowed), else None."""
    text = text.split("#", 1)[0].strip().rstrip(",").strip()
    try:
        value = ast.literal_eval(text)
    except (SyntaxError, ValueError):
        return None
    return value if isinstance(value, str) else None


def parse_rules(rules_dir: Path) -> list[Rule]:
    """Every rule of ``rules_dir/*.smk`` (in if/else branches too), ``use rule`` resolved.

    A directive's value may follow its colon or stand on the next line (snakefmt's layout);
    paths are relative to the ``.smk`` file that names them, as Snakemake resolves them. A
    ``use rule A as B`` keeps A's environment and script unless its ``with:`` block names
    its own.
    """
    rules: list[Rule] = []
    for smk in sorted(rules_dir.glob("*.smk")):
        lines = smk.read_text(encoding="utf-8").splitlines()
        current: Rule | None = None
        body_indent = -1
        pending: tuple[str, int] | None = None  # directive whose value is on the next line
        for number, line in enumerate(lines, start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            head = _RULE_RE.match(line) or _USE_RE.match(line)
            if head:
                current = Rule(head["name"], smk, number, parent=head.groupdict().get("parent"))
                rules.append(current)
                body_indent = _indent(line)
                pending = None
                continue
            if current is None:
                continue
            if _indent(line) <= body_indent:
                current, pending = None, None
                continue
            if pending is not None:
                key, key_indent = pending
                pending = None
                if _indent(line) > key_indent:
                    _set_directive(current, key, stripped, smk)
                    continue
            directive = _DIRECTIVE_RE.match(line)
            if directive:
                if directive["rest"].strip():
                    _set_directive(current, directive["key"], directive["rest"], smk)
                else:
                    pending = (directive["key"], _indent(line))
    by_name = {rule.name: rule for rule in rules if rule.parent is None}
    for rule in rules:
        if rule.parent is None:
            continue
        parent = by_name.get(rule.parent)
        if parent is None:
            rule.problems.append(f"inherits from unknown rule {rule.parent!r}")
            continue
        rule.env = rule.env or parent.env
        rule.script = rule.script or parent.script
    return rules


def _set_directive(rule: Rule, key: str, text: str, smk: Path) -> None:
    value = _literal(text)
    if value is None:
        rule.problems.append(f"{key}: is not a plain string ({text.strip()!r}); cannot check it")
        return
    path = (smk.parent / value).resolve()
    if key == "conda":
        rule.env = path
    else:
        rule.script = path


# --------------------------------------------------------------------------------------------
# Imports


@dataclass(frozen=True)
class Found:
    """One import a module makes: a local module (``module``) or a third-party ``dist``."""

    line: int
    what: str  # as written: "import nibabel", "from glioma.io import atomic_path", ...
    module: Path | None = None
    dist: str | None = None


def _module_file(root: Path, dotted: str) -> Path | None:
    """The file of module ``dotted`` under ``root`` (``a/b.py`` or ``a/b/__init__.py``)."""
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(root: Path, dotted: str) -> list[Path]:
    """The files Python runs to import ``dotted``: every parent package, then the module."""
    parts = dotted.split(".")
    files = []
    for end in range(1, len(parts) + 1):
        found = _module_file(root, ".".join(parts[:end]))
        if found is not None:
            files.append(found)
    return files


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _installed_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distribution_of(top: str) -> str:
    """The distribution that provides top-level import name ``top`` (canonical name)."""
    if top in IMPORT_TO_DIST:
        return canonical(IMPORT_TO_DIST[top])
    installed = _installed_distributions().get(top)
    if installed:
        return canonical(sorted(installed)[0])
    return canonical(top)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _runtime_nodes(tree: ast.AST, functions: bool = True):
    """Every node of ``tree`` but ``if TYPE_CHECKING:`` bodies (and function bodies unless
    ``functions``)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if not functions and isinstance(node, _FUNCTIONS):
            continue
        stack.extend(ast.iter_child_nodes(node))


def module_imports(
    path: Path, root: Path, functions: bool = True, source: str | None = None
) -> list[Found]:
    """The imports of one file (``source`` if given), resolved.

    Imports inside functions count unless ``functions`` is false (the scripts and the package
    import heavy libraries lazily). A name that resolves to a file under ``root`` (the
    script's folder, which Snakemake puts on ``sys.path``) is local; a standard-library name is
    dropped; anything else is mapped to its distribution. Relative imports resolve against the
    file's package.
    """
    if source is None:
        source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    package = _module_name(root, path) if path.is_relative_to(root) else ""
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: list[Found] = []

    def add(dotted: str, line: int, what: str, names: tuple[str, ...] = ()) -> None:
        top = dotted.split(".")[0]
        local = _with_parents(root, dotted)
        if local:
            found.extend(Found(line, what, module=file) for file in local)
            for name in names:  # ``from pkg import submodule``
                sub = _module_file(root, f"{dotted}.{name}")
                if sub is not None:
                    found.append(Found(line, what, module=sub))
        elif top and top not in sys.stdlib_module_names:
            found.append(Found(line, what, dist=distribution_of(top)))

    for node in _runtime_nodes(tree, functions):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                dotted = ".".join([*base, *([node.module] if node.module else [])])
            else:
                dotted = node.module or ""
            written = "." * node.level + (node.module or "")
            add(dotted, node.lineno, f"from {written} import {', '.join(names)}", names)
        elif isinstance(node, ast.Attribute) and node.attr in IMPLICIT_CALLS:
            found.append(Found(node.lineno, f".{node.attr}(...)", dist=IMPLICIT_CALLS[node.attr]))
    return found


@dataclass
class Closure:
    """What running one script imports: local modules reached, and each distribution's chain."""

    modules: list[str]
    chains: dict[str, list[str]]  # distribution -> import chain, script first


def script_closure(
    script: Path, root: Path | None = None, lazy: bool = True, source: str | None = None
) -> Closure:
    """Follow ``script``'s imports through the local package (breadth first: shortest chains).

    The script's own functions run (its ``main``); with ``lazy`` false only the package
    modules' module-level imports count (what importing them costs before any call).
    """
    root = root or script.parent
    label = {script: _rel(script)}
    parent: dict[Path, tuple[Path, Found] | None] = {script: None}
    chains: dict[str, list[str]] = {}
    queue = deque([script])

    def chain_to(path: Path) -> list[str]:
        steps = []
        while parent[path] is not None:
            up, how = parent[path]
            steps.append(f"{label[path]} ({_rel(up)}:{how.line}: {how.what})")
            path = up
        return [label[path], *reversed(steps)]

    while queue:
        path = queue.popleft()
        functions = lazy or path == script
        text = source if path == script else None
        for item in module_imports(path, root, functions, text):
            if item.module is not None and item.module not in parent:
                parent[item.module] = (path, item)
                label[item.module] = _module_name(root, item.module)
                queue.append(item.module)
            elif item.dist is not None and item.dist not in chains:
                chains[item.dist] = [
                    *chain_to(path),
                    f"{item.dist} ({_rel(path)}:{item.line}: {item.what})",
                ]
    modules = sorted(label[p] for p in parent if p != script)
    return Closure(modules, chains)


# --------------------------------------------------------------------------------------------
# Environments and the lock


@dataclass(frozen=True)
class Dep:
    """One entry of an environment file."""

    raw: str
    source: str  # "conda" or "pip"
    dist: str | None  # canonical distribution name; None when unparsable
    pin: str | None  # exact version, when the entry pins one


_NAME_RE = re.compile(r"^\s*(?:[\w.-]+::)?(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?")


def _parse_dep(raw: str, source: str) -> Dep:
    match = _NAME_RE.match(raw)
    if match is None or raw.lstrip().startswith("-"):
        return Dep(raw, source, None, None)
    name = canonical(match["name"])
    if source == "conda":
        name = CONDA_TO_DIST.get(name, name)
    rest = raw[match.end() :].split(";", 1)[0].split("#", 1)[0].strip()
    pin = None
    exact = re.fullmatch(
        r"(==|=)\s*([\w.+!-]+)" if source == "conda" else r"==\s*([\w.+!-]+)", rest
    )
    if exact:
        pin = exact.groups()[-1]
    elif source == "conda" and re.fullmatch(r"[\w.+!-]+", rest):  # conda's "numpy 2.3.5"
        pin = rest
    return Dep(raw, source, name, pin)


def parse_env(path: Path) -> list[Dep]:
    """The conda and ``pip:`` entries of a conda environment file."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    deps = []
    for entry in data.get("dependencies") or []:
        if isinstance(entry, dict):
            deps.extend(_parse_dep(str(pip), "pip") for pip in entry.get("pip") or [])
        else:
            deps.append(_parse_dep(str(entry), "conda"))
    return deps


def parse_lock(path: Path) -> dict[str, str]:
    """``name==version`` lines of the lock, by canonical name."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(\S+?)\s*(#.*)?", line)
        if match:
            pins[canonical(match[1])] = match[2]
    return pins


def lock_python(path: Path) -> str | None:
    """The Python version the lock's header says it was frozen with ("3.11"), if it says."""
    match = re.search(r"Python (\d+\.\d+)", path.read_text(encoding="utf-8"))
    return match[1] if match else None


# --------------------------------------------------------------------------------------------
# Checks


def missing_imports(rules: list[Rule]) -> list[str]:
    """One message per rule script import (direct or through the package) its env lacks."""
    problems = []
    for rule in rules:
        problems.extend(f"rule {rule.name} ({rule.where}): {p}" for p in rule.problems)
        if rule.script is None:
            continue
        if rule.script.suffix != ".py":
            continue
        if not rule.script.is_file():
            problems.append(f"rule {rule.name} ({rule.where}): no script {_rel(rule.script)}")
            continue
        if rule.env is None:
            problems.append(f"rule {rule.name} ({rule.where}): has a script but no conda: env")
            continue
        if not rule.env.is_file():
            problems.append(f"rule {rule.name} ({rule.where}): no env file {_rel(rule.env)}")
            continue
        provided = {dep.dist for dep in parse_env(rule.env)}
        for dist, chain in sorted(script_closure(rule.script).chains.items()):
            if dist not in provided:
                problems.append(
                    f"rule {rule.name} ({rule.where}): {_rel(rule.env)} lacks {dist}, "
                    "imported via " + " -> ".join(chain)
                )
    return problems


def pin_mismatches(env_files: list[Path], lock: Path) -> list[str]:
    """One message per env entry that is unpinned, unknown to the lock or pinned otherwise."""
    pins = parse_lock(lock)
    python = lock_python(lock)
    problems = []
    for env in env_files:
        for dep in parse_env(env):
            where = f"{_rel(env)}: {dep.raw!r}"
            if dep.dist is None:
                problems.append(f"{where}: cannot parse this entry")
            elif dep.dist == "python":
                if python and (dep.pin is None or dep.pin.split(".")[:2] != python.split(".")):
                    problems.append(f"{where}: the lock was frozen with Python {python}")
            elif dep.dist in NOT_DISTRIBUTIONS:
                continue
            elif dep.dist not in pins:
                problems.append(f"{where}: {dep.dist} is not in {_rel(lock)}")
            elif dep.pin is None:
                problems.append(f"{where}: not pinned (the lock has {dep.dist}=={pins[dep.dist]})")
            elif dep.pin != pins[dep.dist]:
                problems.append(f"{where}: the lock has {dep.dist}=={pins[dep.dist]}")
    return problems


def env_table(rules: list[Rule]) -> list[tuple[str, str, str, str, int]]:
    """(rule, script, env, distributions needed, package modules reached) per script rule.

    A distribution marked ``*`` is reached only through imports inside functions.
    """
    table = []
    for rule in rules:
        if rule.script is None or not rule.script.is_file():
            continue
        closure = script_closure(rule.script)
        eager = script_closure(rule.script, lazy=False).chains
        dists = " ".join(d if d in eager else f"{d}*" for d in sorted(closure.chains))
        env = _rel(rule.env) if rule.env else "-"
        table.append((rule.name, rule.script.name, env, dists, len(closure.modules)))
    return table


def workflow_closure(repo: Path = REPO) -> Closure:
    """What the Snakefile and ``rules/*.smk`` import at parse time (the environment that runs
    Snakemake, not a rule's): their import lines followed through the package."""
    lines = []
    for smk in [repo / "Snakefile", *sorted((repo / "rules").glob("*.smk"))]:
        text = smk.read_text(encoding="utf-8")
        lines += [
            line.strip() for line in text.splitlines() if re.match(r"\s*(from|import) ", line)
        ]
    return script_closure(
        repo / "Snakefile", root=repo / "workflow_scripts", source="\n".join(lines)
    )


# --------------------------------------------------------------------------------------------
# Tests


def test_rules_are_found() -> None:
    """The parser sees the workflow's rules, ``use rule`` and if/else ones included."""
    rules = {rule.name: rule for rule in parse_rules(RULES_DIR)}
    assert len([r for r in rules.values() if r.script]) >= 20, sorted(rules)
    for name in ("train_classifier", "train_fold", "predict_slices", "make_splits"):
        assert name in rules, f"rule {name} not found in rules/*.smk"
    assert rules["train_fold"].script == rules["train_classifier"].script
    assert rules["train_fold"].env == rules["train_classifier"].env
    for rule in rules.values():
        if rule.script is not None:
            assert rule.env is not None, f"rule {rule.name} ({rule.where}) has no conda: env"


def test_every_rule_env_provides_its_imports() -> None:
    problems = missing_imports(parse_rules(RULES_DIR))
    assert not problems, "\n".join(problems)


def test_env_pins_agree_with_the_lock() -> None:
    env_files = sorted(ENVS_DIR.glob("*.yaml"))
    assert env_files
    problems = pin_mismatches(env_files, LOCK)
    assert not problems, "\n".join(problems)


def test_the_workflow_env_provides_every_rule() -> None:
    """envs/workflow.yaml, the one environment, provides what every rule's script imports."""
    rules = parse_rules(RULES_DIR)
    for rule in rules:
        if rule.env is not None:
            rule.env = WORKFLOW_ENV
    problems = missing_imports(rules)
    assert not problems, "\n".join(problems)


def test_env_files_named_by_rules_exist() -> None:
    named = {rule.env for rule in parse_rules(RULES_DIR) if rule.env}
    assert named
    missing = sorted(_rel(env) for env in named if not env.is_file())
    assert not missing, f"rules name env files that do not exist: {missing}"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_checker_reports_a_missing_distribution(tmp_path: Path) -> None:
    """A fake workflow whose env lacks what a library module imports inside a function."""
    _write(
        tmp_path / "rules" / "fake.smk",
        "rule base:\n"
        '    conda:\n        "../envs/small.yaml"\n'
        '    script:\n        "../scripts/run.py"\n'
        "\n\nif FLAG:\n\n"
        "    use rule base as branch with:\n"
        '        output:\n            "x.txt",\n'
        "\nelse:\n\n"
        "    rule other:\n"
        '        conda: "../envs/full.yaml"\n'
        '        script: "../scripts/run.py"\n',
    )
    _write(tmp_path / "envs" / "small.yaml", "dependencies:\n  - python=3.11\n  - numpy=2.0\n")
    _write(
        tmp_path / "envs" / "full.yaml",
        "dependencies:\n  - python=3.11\n  - pip\n  - pip:\n"
        "      - numpy==2.0\n      - SimpleITK==9.9\n      - nibabel==1.0\n      - pyarrow==1\n",
    )
    _write(tmp_path / "scripts" / "run.py", "from pkg.io import save\nimport numpy\nsave()\n")
    _write(tmp_path / "scripts" / "pkg" / "__init__.py", "")
    _write(
        tmp_path / "scripts" / "pkg" / "io.py",
        "import os\nfrom . import util\n\n\ndef save(table=None):\n    import nibabel\n",
    )
    _write(
        tmp_path / "scripts" / "pkg" / "util.py",
        "import SimpleITK as sitk\n\n\ndef f(t):\n    t.to_parquet('x')\n",
    )
    rules = {rule.name: rule for rule in parse_rules(tmp_path / "rules")}
    assert set(rules) == {"base", "branch", "other"}
    assert rules["branch"].env == (tmp_path / "envs" / "small.yaml").resolve()

    closure = script_closure(tmp_path / "scripts" / "run.py")
    assert closure.modules == ["pkg", "pkg.io", "pkg.util"]
    assert set(closure.chains) == {"nibabel", "numpy", "pyarrow", "simpleitk"}

    problems = missing_imports(list(rules.values()))
    lacking = {(p.split(" ")[1], p.split(" lacks ")[1].split(",")[0]) for p in problems}
    assert lacking == {
        (rule, dist) for rule in ("base", "branch") for dist in ("nibabel", "pyarrow", "simpleitk")
    }, problems
    nibabel = next(p for p in problems if p.startswith("rule base ") and "lacks nibabel" in p)
    assert "envs/small.yaml" in nibabel
    assert "pkg.io" in nibabel and "import nibabel" in nibabel
    assert "scripts/run.py" in nibabel.split(" -> ")[0]

    lock = _write(
        tmp_path / "requirements.txt",
        "# frozen on Python 3.11\nnumpy==2.0\nSimpleITK==9.9\nnibabel==1.1\n",
    )
    mismatches = pin_mismatches(sorted((tmp_path / "envs").glob("*.yaml")), lock)
    assert len(mismatches) == 2, mismatches
    assert any("nibabel==1.0" in m and "nibabel==1.1" in m for m in mismatches)
    assert any("pyarrow is not in" in m for m in mismatches)


def test_parse_dep_forms() -> None:
    assert _parse_dep("numpy=2.3.5", "conda") == Dep("numpy=2.3.5", "conda", "numpy", "2.3.5")
    assert _parse_dep("conda-forge::pytorch==2.1", "conda").dist == "torch"
    assert _parse_dep("numpy >=2", "conda").pin is None
    assert _parse_dep("HD_BET==2.0.1", "pip") == Dep("HD_BET==2.0.1", "pip", "hd-bet", "2.0.1")
    assert _parse_dep("torch>=2", "pip").pin is None
    assert _parse_dep("-e .", "pip").dist is None


if __name__ == "__main__":
    print("| rule | script | env | distributions its script reaches | package modules |")
    print("|---|---|---|---|---|")
    for name, script, env, dists, modules in env_table(parse_rules(RULES_DIR)):
        print(f"| {name} | {script} | {env} | {dists} | {modules} |")
    parse_time = workflow_closure()
    print(f"\nSnakefile and rules/*.smk at parse time: {' '.join(sorted(parse_time.chains))}")
