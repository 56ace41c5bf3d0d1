# The same short training on the MPI backend (4 ranks) and the threads
# backend (4 workers) ends with the same model and the same traffic; an MPI
# checkpoint resumes under MPI bitwise. The same for powersgd and fp16.
#
# The models agree to 1e-3 relative, not bitwise: MPI adds the four
# gradients in its own order. That rounding difference stays near 1e-7 for
# the first 20 steps, then jumps (4.5e-5 after these 30 steps on an AMD
# Zen 3, below 1e-5 on an earlier machine), most likely where a ReLU or
# max-pool comparison near a tie goes the other way. A real disagreement
# moves the model by far more: on the same 30 steps, DEF-A instead of DEF
# differs by 0.41, λ = 0.35 instead of 0.3 by 0.03, EF instead of DEF by 2.5.
# Variables: DEFT, MODEL_DIFF, MPIEXEC, MPIFLAGS (a list), WORK.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(common train --model lenet --algo def --compressor rbgs --ratio 64
    --batch 128 --limit-train 3840 --limit-test 1000 --seed 3 --quiet)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err TIMEOUT 300)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${ARGN}\nexit ${rc}\n${out}${err}")
  endif()
  message(STATUS "${out}")
endfunction()

function(final_field file name outvar)
  file(STRINGS ${file} lines REGEX "\"final\": true")
  string(REGEX MATCH "\"${name}\": [0-9.]+" m "${lines}")
  set(${outvar} "${m}" PARENT_SCOPE)
endfunction()

# 30 steps (3840 / 128), one epoch.
run(${DEFT} ${common} --epochs 1 --workers 4 --backend threads
    --log ${WORK}/threads.jsonl --save-model ${WORK}/threads.bin)
run(${MPIEXEC} ${MPIFLAGS} -np 4 ${DEFT} ${common} --epochs 1 --backend mpi
    --log ${WORK}/mpi.jsonl --save-model ${WORK}/mpi.bin)
run(${MODEL_DIFF} ${WORK}/mpi.bin ${WORK}/threads.bin 1e-3)
final_field(${WORK}/threads.jsonl bytes_per_worker bt)
final_field(${WORK}/mpi.jsonl bytes_per_worker bm)
if(NOT bt STREQUAL bm OR bt STREQUAL "")
  message(FATAL_ERROR "bytes sent differ: threads '${bt}', mpi '${bm}'")
endif()

# Two epochs at once, versus one epoch, a checkpoint, and a resume.
run(${MPIEXEC} ${MPIFLAGS} -np 4 ${DEFT} ${common} --epochs 2 --backend mpi
    --save-model ${WORK}/full.bin)
run(${MPIEXEC} ${MPIFLAGS} -np 4 ${DEFT} ${common} --epochs 2 --backend mpi
    --stop-after 1 --checkpoint ${WORK}/run.ckpt --log ${WORK}/first.jsonl)
run(${MPIEXEC} ${MPIFLAGS} -np 4 ${DEFT} ${common} --epochs 2 --backend mpi
    --resume ${WORK}/run.ckpt --save-model ${WORK}/resumed.bin)
run(${MODEL_DIFF} ${WORK}/resumed.bin ${WORK}/full.bin 0)

# A checkpoint of 4 ranks is refused on 2 without --reshard, saying how;
# with it, the output model right after the restart has the checkpoint's
# test accuracy, and the run trains on (the loss of its second epoch is
# below the first's).
execute_process(COMMAND ${MPIEXEC} ${MPIFLAGS} -np 2 ${DEFT} ${common}
                --epochs 2 --backend mpi --resume ${WORK}/run.ckpt
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err
                TIMEOUT 300)
if(rc EQUAL 0 OR NOT "${out}${err}" MATCHES "written by 4 workers.*--reshard")
  message(FATAL_ERROR "resume with 2 ranks: exit ${rc}, want a refusal "
                      "naming 4 workers and --reshard:\n${out}${err}")
endif()
run(${MPIEXEC} ${MPIFLAGS} -np 2 ${DEFT} ${common} --epochs 2 --backend mpi
    --resume ${WORK}/run.ckpt --reshard --log ${WORK}/reshard.jsonl)
function(line_field file regex name outvar)
  file(STRINGS ${file} lines REGEX "${regex}")
  list(GET lines 0 line)
  string(REGEX MATCH "\"${name}\": [0-9.]+" m "${line}")
  string(REGEX REPLACE ".*: " "" v "${m}")
  set(${outvar} "${v}" PARENT_SCOPE)
endfunction()
line_field(${WORK}/first.jsonl "\"epoch\": 1," test_acc acc1)
line_field(${WORK}/reshard.jsonl "\"resharded\"" test_acc acc_r)
line_field(${WORK}/first.jsonl "\"epoch\": 1," train_loss l1)
line_field(${WORK}/reshard.jsonl "\"epoch\": 2," train_loss l2)
if(acc1 STREQUAL "" OR NOT acc_r STREQUAL acc1 OR NOT l2 LESS l1)
  message(FATAL_ERROR "MPI re-shard 4 -> 2: test accuracy '${acc1}' at the "
                      "checkpoint, '${acc_r}' after; train loss '${l1}' in "
                      "epoch 1, '${l2}' in epoch 2")
endif()
# powersgd (two allreduces a step, the warm start in the checkpoint) and
# fp16 (the 16-bit MPI_Allreduce with a user op) on both backends: the same
# model to rounding after 10 steps, the same bytes, and powersgd's MPI
# resume bitwise. The tolerances: powersgd's orthogonalization passes the
# allreduce's rounding on (1.9e-7 after 10 steps, 3e-3 after 30: the
# subspace of two close singular values turns); fp16 rounds every partial
# sum under MPI but only the total on threads, by design (1.6e-4).
foreach(comp "powersgd;--powersgd-rank;2;1e-5" "fp16;1e-3")
  list(GET comp 0 name)
  list(POP_BACK comp tol)
  set(c2 train --model lenet --algo def --compressor ${comp}
      --batch 128 --limit-train 1280 --limit-test 1000 --seed 3 --quiet)
  run(${DEFT} ${c2} --epochs 1 --workers 4 --backend threads
      --log ${WORK}/${name}-threads.jsonl --save-model ${WORK}/${name}-threads.bin)
  run(${MPIEXEC} ${MPIFLAGS} -np 4 ${DEFT} ${c2} --epochs 1 --backend mpi
      --log ${WORK}/${name}-mpi.jsonl --save-model ${WORK}/${name}-mpi.bin)
  run(${MODEL_DIFF} ${WORK}/${name}-mpi.bin ${WORK}/${name}-threads.bin ${tol})
  final_field(${WORK}/${name}-threads.jsonl bytes_per_worker bt)
  final_field(${WORK}/${name}-mpi.jsonl bytes_per_worker bm)
  if(NOT bt STREQUAL bm OR bt STREQUAL "")
    message(FATAL_ERROR "${name}: bytes sent differ: threads '${bt}', mpi '${bm}'")
  endif()
endforeach()
set(c2 train --model lenet --algo ef --compressor powersgd --powersgd-rank 2
    --batch 128 --limit-train 1280 --limit-test 1000 --seed 3 --quiet)
run(${MPIEXEC} ${MPIFLAGS} -np 4 ${DEFT} ${c2} --epochs 2 --backend mpi
    --save-model ${WORK}/psgd-full.bin)
run(${MPIEXEC} ${MPIFLAGS} -np 4 ${DEFT} ${c2} --epochs 2 --backend mpi
    --stop-after 1 --checkpoint ${WORK}/psgd.ckpt)
run(${MPIEXEC} ${MPIFLAGS} -np 4 ${DEFT} ${c2} --epochs 2 --backend mpi
    --resume ${WORK}/psgd.ckpt --save-model ${WORK}/psgd-resumed.bin)
run(${MODEL_DIFF} ${WORK}/psgd-resumed.bin ${WORK}/psgd-full.bin 0)
file(REMOVE_RECURSE ${WORK})
