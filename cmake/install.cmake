# Install rules: the static and shared library, the one public header, the
# CLI, the Python package, a pkg-config file (deft.pc) and a CMake package
# (deftConfig.cmake: find_package(deft) gives deft::deft, the shared
# library, and deft::deft_static).
# lib, not Debian's lib/<multiarch>: the prefix is chosen at install time
# (make install PREFIX=...), so the layout must not depend on it.
set(CMAKE_INSTALL_LIBDIR lib CACHE PATH "Library directory under the prefix")
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(DEFT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/deft)
set(DEFT_PYTHON_DIR "${CMAKE_INSTALL_LIBDIR}/python3/dist-packages" CACHE STRING
    "Where make install puts the Python package deft (relative to the prefix)")

set_target_properties(deft PROPERTIES
                      INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
install(TARGETS deft_shared deft_static EXPORT deftTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS deft RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${PROJECT_SOURCE_DIR}/include/deft.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/python/deft
        DESTINATION ${DEFT_PYTHON_DIR}
        FILES_MATCHING PATTERN "*.py" PATTERN "__pycache__" EXCLUDE)
install(EXPORT deftTargets NAMESPACE deft:: DESTINATION ${DEFT_CMAKE_DIR})

# What a consumer of the installed package must find again: the link
# interface names Threads::Threads, ZLIB::ZLIB and (with MPI) MPI::MPI_C.
set(DEFT_CONFIG_HAVE_MPI 0)
if("mpi" IN_LIST DEFT_BACKENDS)
  set(DEFT_CONFIG_HAVE_MPI 1)
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/deftConfig.cmake.in
  ${PROJECT_BINARY_DIR}/deftConfig.cmake INSTALL_DESTINATION ${DEFT_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/deftConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/deftConfig.cmake
              ${PROJECT_BINARY_DIR}/deftConfigVersion.cmake
        DESTINATION ${DEFT_CMAKE_DIR})

# pkg-config: Requires.private names the .pc files Debian ships for the
# dependencies, so that `pkg-config --static --libs deft` is complete;
# oneDNN has none, and is -ldnnl in deft.pc.in's Libs.private.
set(DEFT_PC_REQUIRES_PRIVATE "zlib openblas")
if(DEFT_CONFIG_HAVE_MPI)
  string(APPEND DEFT_PC_REQUIRES_PRIVATE " ompi-c")
endif()
# The prefix is found from the .pc file's own place, so the file is right
# wherever the tree was installed.
file(RELATIVE_PATH DEFT_PC_UP "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
string(REGEX REPLACE "/$" "" DEFT_PC_UP "${DEFT_PC_UP}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/deft.pc.in
               ${PROJECT_BINARY_DIR}/deft.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/deft.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# The test: install into a temporary prefix, then build and run programs
# against the installed copy with pkg-config and with find_package(deft).
# Not in the sanitizer build, whose library needs the sanitizer runtime in
# every program that links it.
if(NOT DEFT_SANITIZE)
  add_test(NAME install_consumers
           COMMAND ${CMAKE_COMMAND} -DBUILD=${PROJECT_BINARY_DIR}
                   -DSRC=${PROJECT_SOURCE_DIR}/tests/install
                   -DWORK=${PROJECT_BINARY_DIR}/install_test
                   -P ${PROJECT_SOURCE_DIR}/tests/install.cmake)
  set_tests_properties(install_consumers PROPERTIES TIMEOUT 300)
endif()
