# Runs test_comm_mpi_dies under mpirun (see that file for what Open MPI
# does when a rank dies) and asserts that the job ends on its own, non-zero,
# within MAX_SECONDS. Usage:
#   cmake -DMPIEXEC=mpirun "-DMPIEXEC_ARGS=--oversubscribe;-np;4"
#         -DPROG=test_comm_mpi_dies -DMODE=kill [-DMAX_SECONDS=60]
#         [-DEXPECT=regex] -P mpi_dies.cmake
# EXPECT: a regular expression that stderr must match (the watchdog's
# message for MODE=stop).
foreach(v MPIEXEC PROG MODE)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "mpi_dies.cmake: -D${v}=... is required")
  endif()
endforeach()
if(NOT DEFINED MAX_SECONDS)
  set(MAX_SECONDS 60)
endif()
# Hard stop well after the limit (and before CTest's TIMEOUT), so that a
# hang is reported as such. The survivors also stop themselves by alarm
# after 100 s (test_comm_mpi_dies.c), so nothing is left running.
math(EXPR hard_stop "${MAX_SECONDS} + 30")

string(TIMESTAMP t0 "%s" UTC)
execute_process(COMMAND ${MPIEXEC} ${MPIEXEC_ARGS} ${PROG} ${MODE}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err
                TIMEOUT ${hard_stop})
string(TIMESTAMP t1 "%s" UTC)
math(EXPR seconds "${t1} - ${t0}")

set(log "exit status: ${rc}\nduration: ${seconds} s (limit ${MAX_SECONDS} s)\n"
        "--- stdout ---\n${out}--- stderr ---\n${err}")
if(rc MATCHES "timeout" OR rc MATCHES "Process terminated")
  message(FATAL_ERROR "mpirun did not end within ${hard_stop} s after a rank "
                      "died or stopped (hang)\n${log}")
endif()
if(rc STREQUAL "0")
  message(FATAL_ERROR "mpirun exited 0 although rank 1 died\n${log}")
endif()
if(seconds GREATER MAX_SECONDS)
  message(FATAL_ERROR "mpirun took ${seconds} s to end the job\n${log}")
endif()
if(err MATCHES "SURVIVOR_DEADLINE")
  message(FATAL_ERROR "the runtime did not kill the survivors\n${log}")
endif()
if(NOT err MATCHES "rank 1: dying")
  message(FATAL_ERROR "rank 1 never reached the point where it dies\n${log}")
endif()
if(NOT EXPECT STREQUAL "" AND NOT err MATCHES "${EXPECT}")
  message(FATAL_ERROR "stderr does not match '${EXPECT}'\n${log}")
endif()
message(STATUS "mpirun ended the job ${seconds} s after start with exit "
               "status ${rc} (mode ${MODE})\n${err}")
