# Python tests (tests/python, pytest) under Debian's /usr/bin/python3, where
# python3-torch lives; the python3 first on PATH may be another interpreter
# without torch. They load this build's libdeft.so through DEFT_LIBRARY.
# The sanitizer build leaves them out: a Python process would need the
# sanitizer runtime preloaded, and the C code they reach is the same code
# the C tests run under the sanitizers.
set(DEFT_PYTHON "/usr/bin/python3" CACHE FILEPATH
    "Python interpreter with torch and pytest for the Python tests")
if(DEFT_SANITIZE)
  message(STATUS "deft: Python tests not registered in the sanitizer build")
  return()
endif()
if(NOT EXISTS ${DEFT_PYTHON})
  message(FATAL_ERROR "${DEFT_PYTHON} not found: run scripts/install-deps.sh "
                      "(Debian packages python3-torch python3-pytest)")
endif()
set(_deft_py_env
    DEFT_LIBRARY=$<TARGET_FILE:deft_shared>
    PYTHONPATH=${PROJECT_SOURCE_DIR}/python
    DEFT_CLI=$<TARGET_FILE:deft>
    DEFT_BUILD_DIR=${PROJECT_BINARY_DIR}
    DEFT_MPIEXEC=${MPIEXEC_EXECUTABLE}
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1)
add_test(NAME python
         COMMAND ${DEFT_PYTHON} -m pytest -q -p no:cacheprovider
                 ${PROJECT_SOURCE_DIR}/tests/python)
set_tests_properties(python PROPERTIES TIMEOUT 900 RUN_SERIAL TRUE
                     ENVIRONMENT "${_deft_py_env}")

