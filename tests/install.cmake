# make install into a temporary prefix, then build tests/install/consumer.c
# against that copy only: with pkg-config (shared and --static) and with
# find_package(deft) (deft::deft and deft::deft_static), run each, and check
# what they print. Arguments: BUILD (deft's build dir), SRC, WORK.
file(REMOVE_RECURSE ${WORK})
set(PREFIX ${WORK}/prefix)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}\n${err}")
  endif()
  set(OUT "${out}" PARENT_SCOPE)
endfunction()

function(expect_runs exe)
  run(${exe})
  if(NOT OUT MATCHES "^deft 0\\.1\\.0 model\\[0\\] = 0\\.9500")
    message(FATAL_ERROR "${exe} printed '${OUT}', want 'deft 0.1.0 model[0] = 0.9500'")
  endif()
  message(STATUS "${exe}: ${OUT}")
endfunction()

run(${CMAKE_COMMAND} --install ${BUILD} --prefix ${PREFIX})
foreach(f include/deft.h lib/libdeft.so lib/libdeft.a lib/pkgconfig/deft.pc
          lib/cmake/deft/deftConfig.cmake bin/deft
          lib/python3/dist-packages/deft/__init__.py)
  if(NOT EXISTS ${PREFIX}/${f})
    message(FATAL_ERROR "make install did not install ${f}")
  endif()
endforeach()

# pkg-config, shared: only the installed prefix is searched.
set(ENV{PKG_CONFIG_PATH} ${PREFIX}/lib/pkgconfig)
run(pkg-config --cflags --libs deft)
string(STRIP "${OUT}" flags)
separate_arguments(flags UNIX_COMMAND "${flags}")
if(NOT "${flags}" MATCHES "-I${PREFIX}/lib/pkgconfig/../../include")
  message(FATAL_ERROR "pkg-config --cflags deft gave '${flags}', not the "
                      "installed prefix ${PREFIX}")
endif()
run(cc -o ${WORK}/pc_shared ${SRC}/consumer.c ${flags}
    -Wl,-rpath,${PREFIX}/lib)
expect_runs(${WORK}/pc_shared)
# ldd must show the installed copy, not the build tree's.
run(ldd ${WORK}/pc_shared)
if(NOT OUT MATCHES "${PREFIX}/lib/libdeft\\.so")
  message(FATAL_ERROR "pc_shared does not use the installed libdeft.so:\n${OUT}")
endif()

# pkg-config, static: the private requirements must complete the link.
run(pkg-config --static --cflags --libs deft)
string(STRIP "${OUT}" flags)
separate_arguments(flags UNIX_COMMAND "${flags}")
run(cc -o ${WORK}/pc_static ${SRC}/consumer.c ${PREFIX}/lib/libdeft.a ${flags})
expect_runs(${WORK}/pc_static)

# find_package(deft)
run(${CMAKE_COMMAND} -S ${SRC} -B ${WORK}/cm -DCMAKE_PREFIX_PATH=${PREFIX})
run(${CMAKE_COMMAND} --build ${WORK}/cm)
expect_runs(${WORK}/cm/consumer_shared)
expect_runs(${WORK}/cm/consumer_static)
file(REMOVE_RECURSE ${WORK})
