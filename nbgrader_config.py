"""nbgrader configuration for the course (instructor side).

solutions/ is nbgrader's source folder and notebooks/ its release folder, so that
`nbgrader generate_assignment problem3` writes the student notebook where students find it.
"""
import os

c = get_config()  # noqa: F821 (provided by nbgrader)

c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
c.CourseDirectory.db_url = "sqlite:///build/gradebook.db"

# Each source folder also holds <problem>.py, the notebook's paired text source (jupytext), with
# every solution and hidden test in it. nbgrader copies the other files of a source folder into
# the release and into the folder each submission is graded in: never this one. (A file that
# students need belongs in the autograder package, not in a source folder.)
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.py"]

# The student sees this in place of each solution region. Inside a @triton.jit function the
# interpreter raises it as a NotImplementedError and the GPU compiler rejects it; either way
# the checks report "not implemented yet" instead of a compiler traceback.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Triton compiles each kernel on first use and the checks run many shapes: 30 s is too short.
c.Execute.timeout = int(os.environ.get("COURSE_CELL_TIMEOUT_S", 600))
c.Execute.interrupt_on_timeout = True

# Release notebooks carry no outputs.
c.ClearOutput.enabled = True
