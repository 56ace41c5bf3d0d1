# Fuzz targets (tests/fuzz/fuzz_<target>.c, see fuzz.h). In every build,
# replay_<target> runs the target over its seed corpus (corpus/<target>)
# and its regression corpus (regress/<target>: every input that ever
# crashed or exhausted memory), as the ctest fuzz_replay_<target>. With
# -DDEFT_FUZZ=ON and clang (make fuzz), fuzz_<target> is the libFuzzer
# binary; the whole build is then instrumented for coverage and built with
# AddressSanitizer and UndefinedBehaviorSanitizer.
set(DEFT_FUZZ_TARGETS idx libsvm checkpoint optim_state cli)
set(_fz ${PROJECT_SOURCE_DIR}/tests/fuzz)

function(deft_fuzz_sources target out)
  set(srcs ${_fz}/fuzz_${target}.c)
  if(target STREQUAL "cli")
    list(APPEND srcs ${_fz}/cli_main.c ${PROJECT_SOURCE_DIR}/tools/convex.c
         ${PROJECT_SOURCE_DIR}/tools/checkpoint.c
         ${PROJECT_SOURCE_DIR}/tools/cli.c)
  endif()
  set(${out} ${srcs} PARENT_SCOPE)
endfunction()

foreach(t ${DEFT_FUZZ_TARGETS})
  deft_fuzz_sources(${t} srcs)
  add_executable(replay_${t} ${srcs} ${_fz}/replay.c)
  target_include_directories(replay_${t} PRIVATE ${PROJECT_SOURCE_DIR}/src
                             ${PROJECT_SOURCE_DIR}/tools ${_fz})
  target_link_libraries(replay_${t} PRIVATE deft_static)
  add_test(NAME fuzz_replay_${t}
           COMMAND replay_${t} ${_fz}/corpus/${t} ${_fz}/regress/${t})
  set_tests_properties(fuzz_replay_${t} PROPERTIES TIMEOUT 300)
endforeach()

# The optimizer-state and checkpoint corpora are written by the targets'
# own code (fuzz_make_<target>_seeds DIR).
foreach(t optim_state checkpoint)
  add_executable(fuzz_make_${t}_seeds ${_fz}/fuzz_${t}.c)
  target_compile_definitions(fuzz_make_${t}_seeds PRIVATE DEFT_FUZZ_MAKE_SEEDS)
  target_include_directories(fuzz_make_${t}_seeds PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(fuzz_make_${t}_seeds PRIVATE deft_static)
endforeach()

if(DEFT_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "DEFT_FUZZ needs clang (make fuzz sets CC=clang)")
  endif()
  foreach(t ${DEFT_FUZZ_TARGETS})
    deft_fuzz_sources(${t} srcs)
    add_executable(fuzz_${t} ${srcs})
    target_include_directories(fuzz_${t} PRIVATE ${PROJECT_SOURCE_DIR}/src
                               ${PROJECT_SOURCE_DIR}/tools ${_fz})
    target_link_libraries(fuzz_${t} PRIVATE deft_static)
    target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer)
  endforeach()
endif()
