"""The build's one part that pyproject.toml cannot declare: the relay's optional C part.

``sse_resume_core._speedups`` (addon/sse_resume_core/_speedups.c) reads the id of a chunk that is one whole
event, as ``sse_resume_core._parser.single_event_id_py`` does. It is optional: where no C compiler (or no
Python headers) is at hand the install goes on without it, and the addon reads ids in Python, with the same
results. Written to the limited API, it builds one abi3 module for every CPython from 3.12 on. An editable
install (``uv sync``) builds it next to its source, where the addon is run from in a checkout.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sse_resume_core._speedups",
            ["addon/sse_resume_core/_speedups.c"],
            define_macros=[("Py_LIMITED_API", "0x030C0000")],
            py_limited_api=True,
            optional=True,
        )
    ],
    options={"bdist_wheel": {"py_limited_api": "cp312"}},
)
