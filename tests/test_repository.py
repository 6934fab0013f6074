"""The repository holds together: no import cycle, no citation of a missing file, no eager optional import.

These tests read files only (`ast` and regular expressions); they import
neither TensorFlow nor the package. Each checker is also run on a small
broken example, so that a checker that can no longer find a fault fails too.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "keras_actcoolr"

# Extras of pyproject.toml: the package must import without them.
OPTIONAL_DEPENDENCIES = ("matplotlib", "sklearn", "tensorflow_datasets", "tensorboard")

# Where files and pages are cited (this file's own examples of broken citations excepted).
CITING_FILES = (
    [ROOT / "README.md", ROOT / "CHANGELOG.md"]
    + sorted((ROOT / "docs").glob("*.md"))
    + sorted(path for path in (ROOT / "tests").glob("*.py") if path.name != Path(__file__).name)
    + sorted((ROOT / "examples").glob("*.py"))
    + sorted((ROOT / "benchmarks").glob("*.py"))
)


# ----------------------------------------------------------------------------- import graph


def module_names(package_dir):
    """`{dotted module name: path}` of every `.py` file of the package in `package_dir`."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph(package_dir):
    """`{module: set of modules of the same package it imports}`, anywhere in the module.

    Imports inside functions and methods count as much as those at the top:
    a lazy import hides a cycle from Python, not from a reader. `import a.b`
    and `from a import b` (module `b`) lead to `a.b`; `from a.b import name`
    (not a module) leads to `a.b`. The parent packages that Python imports on
    the way are not counted: every package would otherwise be in a cycle with
    the submodules its `__init__` re-exports.
    """
    modules = module_names(package_dir)
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
                ]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycle(graph):
    """One cycle of `graph` as a list `[a, b, ..., a]`, or `None` when it has none."""
    state = {}  # absent: not visited; 1: on the current path; 2: done

    def visit(node, path):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, path)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def write_package(root, files):
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / relative.split("/")[0]


class TestImportGraph:
    def test_package_has_no_import_cycle(self):
        graph = import_graph(ROOT / PACKAGE)
        assert f"{PACKAGE}.data.datasets" in graph and f"{PACKAGE}.models" in graph  # the scan saw the package
        assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"

    def test_a_cycle_through_a_lazy_import_is_found(self, tmp_path):
        package = write_package(
            tmp_path,
            {
                "pkg/__init__.py": "from pkg.a import f\n",
                "pkg/a.py": "from pkg import b\n\ndef f():\n    return b\n",
                "pkg/b.py": "def g():\n    from .a import f\n    return f\n",
            },
        )
        assert find_cycle(import_graph(package)) == ["pkg.a", "pkg.b", "pkg.a"]

    def test_imports_of_a_shared_third_module_are_no_cycle(self, tmp_path):
        package = write_package(
            tmp_path,
            {
                "pkg/__init__.py": "from pkg.a import f\nfrom pkg.b import g\n",
                "pkg/a.py": "from pkg.shared import Error\nfrom pkg.b import g\n\ndef f():\n    return g\n",
                "pkg/b.py": "import pkg.shared\n\ndef g():\n    raise pkg.shared.Error\n",
                "pkg/shared.py": "class Error(Exception):\n    pass\n",
            },
        )
        graph = import_graph(package)
        assert graph == {
            "pkg": {"pkg.a", "pkg.b"},
            "pkg.a": {"pkg.shared", "pkg.b"},
            "pkg.b": {"pkg.shared"},
            "pkg.shared": set(),
        }
        assert find_cycle(graph) is None


# ----------------------------------------------------------------------------- citations

# [text](target) and ![alt](target); the target ends at the first space or ")".
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# A repository path, in backticks or in a code block: docs/..., tests/..., examples/..., benchmarks/...
REPOSITORY_PATH = re.compile(r"(?<![\w./-])((?:docs|tests|examples|benchmarks)/[\w./-]*\w(?:#[\w-]+)?)")
# Any Markdown page named in the text (README.md, docs/method.md#the-controller, ...).
MARKDOWN_PAGE = re.compile(r"(?<![\w./:-])((?:\.\./)?[\w./-]*\w\.md(?:#[\w-]+)?)(?![\w/])")


def heading_anchors(markdown):
    """GitHub's anchors of the headings of a Markdown text (outside code blocks)."""
    anchors, seen = set(), {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def citations(path, root):
    """`(cited path, anchor or None)` of every relative link and repository path in the file at `path`."""
    text = path.read_text()
    found = []
    if path.suffix == ".md":
        for target in MARKDOWN_LINK.findall(text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            file, _, anchor = target.partition("#")
            found.append(((path.parent / file).resolve() if file else path.resolve(), anchor or None))
    for cited in REPOSITORY_PATH.findall(text) + MARKDOWN_PAGE.findall(text):
        file, _, anchor = cited.partition("#")
        if file.startswith("../"):
            target = (path.parent / file).resolve()
        elif (root / file).exists() or "/" in file:
            target = (root / file).resolve()
        else:  # a page named without a directory, next to the citing file or at the top
            target = (path.parent / file).resolve()
        found.append((target, anchor or None))
    return found


def broken_citations(files, root):
    """`"file: cited"` for every citation whose file (or heading) does not exist."""
    broken = []
    for path in files:
        for target, anchor in citations(path, root):
            where = f"{path.relative_to(root)}: {target.relative_to(root) if target.is_relative_to(root) else target}"
            if not target.exists():
                broken.append(where)
            elif anchor and target.suffix == ".md" and anchor not in heading_anchors(target.read_text()):
                broken.append(f"{where}#{anchor}")
    return sorted(set(broken))


class TestCitations:
    def test_every_cited_file_and_section_exists(self):
        assert (ROOT / "docs" / "method.md").exists()
        assert any(target.suffix == ".md" for target, _ in citations(ROOT / "README.md", ROOT))
        assert broken_citations(CITING_FILES, ROOT) == []

    def test_no_citation_of_documents_outside_the_repository(self):
        offending = [
            f"{path.relative_to(ROOT)}:{number}"
            for path in CITING_FILES + sorted((ROOT / PACKAGE).rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(r"DESIGN\.md|\bthe seed(?:'s|:|\))|\bseed section\b", line, re.IGNORECASE)
        ]
        assert offending == []

    def test_missing_files_pages_and_sections_are_found(self, tmp_path):
        (tmp_path / "docs").mkdir()
        (tmp_path / "examples").mkdir()
        (tmp_path / "examples" / "run.py").write_text("")
        (tmp_path / "docs" / "page.md").write_text("# Page\n\n## The controller\n\n```\n# not a heading\n```\n")
        readme = tmp_path / "README.md"
        readme.write_text(
            "See [the page](docs/page.md#the-controller), `examples/run.py`, [web](https://example.com)\n"
            "and [gone](docs/gone.md), `benchmarks/missing.py`, docs/page.md#no-such-section,\n"
            "`docs/page.md#not-a-heading`, DESIGN.md section 3 and ![figure](docs/figure.png).\n"
        )
        assert broken_citations([readme], tmp_path) == [
            "README.md: DESIGN.md",
            "README.md: benchmarks/missing.py",
            "README.md: docs/figure.png",
            "README.md: docs/gone.md",
            "README.md: docs/page.md#no-such-section",
            "README.md: docs/page.md#not-a-heading",
        ]

    @pytest.mark.parametrize(
        "heading, anchor",
        [
            ("## Set up", "set-up"),
            (
                "### Initial learning rate (supplementary section B, Figure 5)",
                "initial-learning-rate-supplementary-section-b-figure-5",
            ),
            ("## 2. Definitions", "2-definitions"),
            ("## `keras_actcoolr.zoo`: the networks", "keras_actcoolrzoo-the-networks"),
        ],
        ids=["words", "punctuation", "number", "code"],
    )
    def test_heading_anchors_follow_github(self, heading, anchor):
        assert heading_anchors(heading + "\n") == {anchor}


# ----------------------------------------------------------------------------- optional dependencies


def eager_imports(source):
    """Top-level names of the modules imported when a module runs (not inside functions)."""
    found = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue  # runs when called, not when imported
            if isinstance(child, ast.Import):
                found.update(alias.name.split(".")[0] for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.add(child.module.split(".")[0])
            visit(child)

    visit(ast.parse(source))
    return found


class TestOptionalDependencies:
    @pytest.mark.parametrize(
        "module", sorted(module_names(ROOT / PACKAGE)), ids=lambda name: name.removeprefix(f"{PACKAGE}.")
    )
    def test_module_does_not_import_an_optional_dependency_when_imported(self, module):
        path = module_names(ROOT / PACKAGE)[module]
        assert eager_imports(path.read_text()) & set(OPTIONAL_DEPENDENCIES) == set()

    def test_eager_imports_are_told_from_lazy_ones(self):
        source = (
            "import os.path\n"
            "try:\n    import matplotlib.pyplot as plt\nexcept ImportError:\n    plt = None\n"
            "class Plot:\n    from sklearn import datasets\n\n    def draw(self):\n        import tensorboard\n"
            "def load():\n    import tensorflow_datasets as tfds\n"
        )
        assert eager_imports(source) == {"os", "matplotlib", "sklearn"}


# ----------------------------------------------------------------------------- private names


def _private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def defined_private_names(tree):
    """Private names a module defines: functions, classes, methods, class attributes, `self._name = ...`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _private(node.name):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and _private(node.id):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                names.add(node.attr)
    return names


def private_reaches(package_dir):
    """`(module, name, line)` for every private name a module of the package takes from another one.

    A module reaches into another when it imports a `_name` from it (a private
    module of its own package excepted), or reads or writes `obj._name`,
    `getattr(obj, "_name")` or `setattr(obj, "_name", ...)` where `_name` is
    defined by another module of the package and not by itself. `self._name`
    of a class of the same module, the usual case, is therefore allowed.
    """
    modules = module_names(package_dir)
    trees = {name: ast.parse(path.read_text(), str(path)) for name, path in modules.items()}
    defined = {name: defined_private_names(tree) for name, tree in trees.items()}
    reaches = []
    for name, tree in trees.items():
        package = name if modules[name].name == "__init__.py" else name.rpartition(".")[0]
        others = set().union(*(names for other, names in defined.items() if other != name))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package_dir.name:
                for alias in node.names:
                    own_module = node.module == package and f"{node.module}.{alias.name}" in modules
                    if _private(alias.name) and not own_module:
                        reaches.append((name, alias.name, node.lineno))
                continue
            attribute = None
            if isinstance(node, ast.Attribute):
                attribute = node.attr
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) > 1:
                    if isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                        attribute = node.args[1].value
            if attribute and _private(attribute) and attribute in others and attribute not in defined[name]:
                reaches.append((name, attribute, node.lineno))
    return sorted(set(reaches))


def keras_private_attributes(package_dir):
    """`{private attribute: modules}` read or written in the package but defined by none of its modules."""
    modules = module_names(package_dir)
    trees = {name: ast.parse(path.read_text(), str(path)) for name, path in modules.items()}
    defined = set().union(*(defined_private_names(tree) for tree in trees.values()))
    found = {}
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in defined:
                found.setdefault(node.attr, set()).add(name)
    return found


#: Private Keras attributes the package still uses, each because Keras 3 has no public equivalent
#: (see CHANGELOG.md). A new one must be added here with its reason.
KERAS_PRIVATE_ALLOWED = {
    # The schedule object of an optimizer: `optimizer.learning_rate` evaluates it.
    "_learning_rate",
    # Every layer of a model, nested ones included (`Model.layers` lists direct children only).
    "_flatten_layers",
    # The slot index of a variable, which Keras's own update steps use (momentum scheduling).
    "_get_variable_index",
    # RMSprop's momentum slots have no public name.
    "_momentums",
    # Keras's build of a model's variables before its first step (layers, compiled metrics and loss,
    # optimizer slots), which `fit` runs under a strategy only: the step that ActCooLR takes and undoes
    # before the first step needs them built before it to put them back (`APTModel.build_training_state`).
    "_symbolic_build",
}


class TestPrivateNames:
    def test_no_module_reaches_into_another_modules_private_names(self):
        assert private_reaches(ROOT / PACKAGE) == []

    def test_private_keras_api_is_the_documented_list(self):
        assert set(keras_private_attributes(ROOT / PACKAGE)) <= KERAS_PRIVATE_ALLOWED

    def test_reaches_are_found(self, tmp_path):
        package = write_package(
            tmp_path,
            {
                "pkg/__init__.py": "",
                "pkg/owner.py": "class Model:\n    def __init__(self):\n        self._state = 1\n\n\ndef _helper():\n    pass\n",
                "pkg/reader.py": "from pkg.owner import Model, _helper\n\n\ndef f(m):\n    m._state += 1\n    return getattr(m, '_state')\n",
                "pkg/fine.py": "class Own:\n    def __init__(self):\n        self._mine = 0\n\n    def g(self, other):\n        return other._mine\n",
                "pkg/sub/__init__.py": "",
                "pkg/sub/_impl.py": "VALUE = 1\n",
                "pkg/sub/api.py": "from pkg.sub import _impl\n",
            },
        )
        reaches = private_reaches(package)
        assert [(module, attribute) for module, attribute, _ in reaches] == [
            ("pkg.reader", "_helper"),
            ("pkg.reader", "_state"),
            ("pkg.reader", "_state"),
        ]
