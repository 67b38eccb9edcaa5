"""Each source notebook and its paired py:percent file (jupytext) hold the same cells."""
import ast
import runpy

import nbformat
import pytest
from traitlets.config import Config

from autograder import paired_sources
from autograder.problems import ASSIGNMENTS

pytest.importorskip("jupytext")

RESYNC = "run `python -m autograder sync-sources` (or `jupytext --sync solutions/*/*.ipynb`) and commit both"


def _notebook(repo_root, assignment):
    (notebook,) = paired_sources.source_notebooks(repo_root, [assignment])
    return notebook


def test_every_source_folder_has_one_notebook_of_a_known_problem(repo_root):
    folders = sorted(p.name for p in (repo_root / "solutions").iterdir() if p.is_dir())
    assert folders == sorted(ASSIGNMENTS)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_notebook_and_its_text_file_agree(repo_root, assignment):
    difference = paired_sources.first_difference(_notebook(repo_root, assignment))
    assert difference is None, f"{assignment}: {difference}; {RESYNC}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_text_file_is_python_without_outputs(repo_root, assignment):
    text = paired_sources.text_path(_notebook(repo_root, assignment))
    source = text.read_text()
    ast.parse(source, filename=str(text))  # what a linter and py_compile read
    assert "execution_count" not in source and '"outputs"' not in source


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_source_notebook_carries_no_pairing_metadata(repo_root, assignment):
    # Pairing comes from solutions/jupytext.toml: jupytext metadata in the notebook would be
    # copied into the student notebook by nbgrader.
    nb = nbformat.read(str(_notebook(repo_root, assignment)), as_version=4)
    assert "jupytext" not in nb.metadata, f"{assignment}: remove metadata.jupytext from the source notebook"


def test_only_source_notebooks_are_paired(repo_root):
    from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file

    def formats(assignment, folder):
        path = repo_root / folder / assignment / f"{assignment}.ipynb"
        config = find_jupytext_configuration_file(str(path.parent))
        return config and load_jupytext_configuration_file(config).default_formats(str(path))

    for assignment in ASSIGNMENTS:
        assert formats(assignment, "solutions") == "ipynb,py:percent"
        assert not formats(assignment, "notebooks"), "a student notebook must not get a paired .py"


def test_nbgrader_never_copies_the_text_file(repo_root):
    # generate_assignment copies the other files of a source folder into the release, and autograde
    # into the folder each submission runs in: the text file holds every solution and hidden test.
    from nbgrader.utils import is_ignored

    config = Config()
    runpy.run_path(str(repo_root / "nbgrader_config.py"), init_globals={"get_config": lambda: config})
    ignore = config.CourseDirectory.ignore
    for assignment in ASSIGNMENTS:
        text = paired_sources.text_path(_notebook(repo_root, assignment))
        assert is_ignored(str(text), ignore), f"{text} would be copied by nbgrader; ignore globs: {ignore}"


def test_a_difference_names_the_problem_cell_and_line(repo_root, tmp_path):
    import shutil

    notebook = _notebook(repo_root, "problem3")
    shutil.copy(notebook, tmp_path / notebook.name)
    text = paired_sources.text_path(tmp_path / notebook.name)
    original = paired_sources.text_path(notebook).read_text()
    text.write_text(original.replace("def flash_attention_forward(", "def flash_attention_forwards(", 1))
    difference = paired_sources.first_difference(tmp_path / notebook.name)
    assert difference.startswith("cell ") and "(grade id 'kernel') differs in its source: line " in difference
    assert "flash_attention_forwards" in difference

    text.write_text(original.replace('"points": 2', '"points": 3', 1))
    assert "differs in its nbgrader metadata: points is 2 in problem3.ipynb, 3 in problem3.py" \
        in paired_sources.first_difference(tmp_path / notebook.name)

    paired_sources.sync(tmp_path / notebook.name, "notebook")
    assert paired_sources.first_difference(tmp_path / notebook.name) is None
    assert text.read_text() == original
