# Losing workers and continuing on the rest (deft train --resume --reshard,
# deft checkpoint), on the threads backend, as a user would: a 4-worker
# run of DEF (lenet, 48 steps an epoch) stops after its first epoch; the
# checkpoint is refused on 3 workers without --reshard, with a message that
# says how; with it, the output model right after the restart evaluates as
# it did at the checkpoint and the run trains on. deft checkpoint shows the
# file, refuses a worker count that does not divide the batch, and its
# re-shard to the same count gives back the same file.
# Variables: DEFT, WORK.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(common train --model lenet --algo def --compressor rbgs --ratio 64
    --batch 96 --epochs 3 --limit-train 4608 --limit-test 1000 --seed 5 --quiet)

function(run expect_rc)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err TIMEOUT 300)
  if(NOT rc EQUAL expect_rc)
    message(FATAL_ERROR "${ARGN}\nexit ${rc}, want ${expect_rc}\n${out}${err}")
  endif()
  set(out "${out}${err}" PARENT_SCOPE)
endfunction()

# The value of field `name` in the first line of `file` matching `regex`.
function(field file regex name outvar)
  file(STRINGS ${file} lines REGEX "${regex}")
  list(GET lines 0 line)
  string(REGEX MATCH "\"${name}\": [-0-9.e]+" m "${line}")
  string(REGEX REPLACE ".*: " "" v "${m}")
  if(v STREQUAL "")
    message(FATAL_ERROR "no ${name} in ${file}: ${lines}")
  endif()
  set(${outvar} "${v}" PARENT_SCOPE)
endfunction()

run(0 ${DEFT} ${common} --workers 4 --stop-after 1
    --checkpoint ${WORK}/run.ckpt --log ${WORK}/first.jsonl)
run(2 ${DEFT} ${common} --workers 3 --resume ${WORK}/run.ckpt)
if(NOT out MATCHES "written by 4 workers and this run has 3; add --reshard")
  message(FATAL_ERROR "resume on 3 without --reshard: '${out}'")
endif()

# Another model's checkpoint is refused, naming it, even with --reshard.
run(2 ${DEFT} train --model mlp --algo def --compressor rbgs --ratio 64
    --batch 96 --epochs 3 --limit-train 4608 --limit-test 1000 --seed 5
    --quiet --workers 3 --resume ${WORK}/run.ckpt --reshard)
if(NOT out MATCHES "written with --model lenet, this run has --model mlp")
  message(FATAL_ERROR "resume of a lenet checkpoint as mlp: '${out}'")
endif()

foreach(rule mean zero)
  run(0 ${DEFT} ${common} --workers 3 --resume ${WORK}/run.ckpt
      --reshard=${rule} --log ${WORK}/${rule}.jsonl)
  field(${WORK}/${rule}.jsonl "\"resharded\"" from_workers from)
  if(NOT from EQUAL 4)
    message(FATAL_ERROR "${rule}: resharded from '${from}' workers, want 4")
  endif()
  field(${WORK}/first.jsonl "\"epoch\": 1," train_loss loss1)
  field(${WORK}/${rule}.jsonl "\"epoch\": 3," train_loss loss3)
  if(NOT loss3 LESS loss1)
    message(FATAL_ERROR "${rule}: train loss ${loss3} in epoch 3, ${loss1} "
                        "in epoch 1: the re-sharded run does not train")
  endif()
endforeach()
# The mean rule keeps DEF's output x - avg(e): the same test accuracy (and
# loss to rounding) right after the restart as at the checkpoint. The zero
# rule evaluates x instead, another model.
field(${WORK}/first.jsonl "\"epoch\": 1," test_acc acc1)
field(${WORK}/first.jsonl "\"epoch\": 1," test_loss tl1)
field(${WORK}/mean.jsonl "\"resharded\"" test_acc acc_mean)
field(${WORK}/mean.jsonl "\"resharded\"" test_loss tl_mean)
field(${WORK}/zero.jsonl "\"resharded\"" test_loss tl_zero)
if(NOT acc_mean STREQUAL acc1)
  message(FATAL_ERROR "test accuracy ${acc1} at the checkpoint, ${acc_mean} "
                      "right after re-sharding to 3 workers")
endif()
if(tl_mean GREATER tl1)
  set(d "${tl_mean}-${tl1}")
else()
  set(d "${tl1}-${tl_mean}")
endif()
string(REGEX REPLACE "-" ";" pair "${d}")
list(GET pair 0 a)
list(GET pair 1 b)
# |a - b| <= 2e-6 + 1e-6 |a| (6 decimals are logged; the mean of the errors
# is kept to float rounding): compare scaled integers.
string(REGEX REPLACE "\\." "" ai "${a}")
string(REGEX REPLACE "\\." "" bi "${b}")
string(REGEX REPLACE "^0+([0-9])" "\\1" ai "${ai}") # no octal
string(REGEX REPLACE "^0+([0-9])" "\\1" bi "${bi}")
math(EXPR diff "${ai} - ${bi}")
math(EXPR tol "2 + ${ai} / 1000000")
if(diff GREATER tol)
  message(FATAL_ERROR "test loss ${tl1} at the checkpoint, ${tl_mean} after "
                      "re-sharding (mean rule)")
endif()
if(tl_zero STREQUAL tl1)
  message(FATAL_ERROR "the zero rule evaluates the same loss ${tl1}: it should "
                      "drop DEF's errors")
endif()

# deft checkpoint: identity, a bad count, a re-shard to the same count.
run(0 ${DEFT} checkpoint ${WORK}/run.ckpt)
if(NOT out MATCHES "workers +4" OR NOT out MATCHES "lenet" OR
   NOT out MATCHES "def, compressor rbgs" OR NOT out MATCHES "1 epoch\\(s\\) done, step 48")
  message(FATAL_ERROR "deft checkpoint printed '${out}'")
endif()
run(2 ${DEFT} checkpoint ${WORK}/run.ckpt --workers 5 --out ${WORK}/five.ckpt)
if(NOT out MATCHES "batch 96 does not split evenly over 5" OR
   NOT out MATCHES "1, 2, 3, 4, 6, 8, 12")
  message(FATAL_ERROR "re-shard to 5: '${out}'")
endif()
run(0 ${DEFT} checkpoint ${WORK}/run.ckpt --workers 4 --out ${WORK}/same.ckpt)
file(SHA256 ${WORK}/run.ckpt h0)
file(SHA256 ${WORK}/same.ckpt h1)
if(NOT h0 STREQUAL h1)
  message(FATAL_ERROR "re-sharding 4 workers to 4 changed the checkpoint")
endif()
# A file re-sharded offline resumes on its new count without --reshard, as
# the trainer's own re-shard does.
run(0 ${DEFT} checkpoint ${WORK}/run.ckpt --workers 2 --out ${WORK}/two.ckpt)
run(0 ${DEFT} ${common} --workers 2 --resume ${WORK}/two.ckpt
    --log ${WORK}/two.jsonl)
field(${WORK}/two.jsonl "\"epoch\": 2," test_acc acc2)
run(1 ${DEFT} checkpoint ${WORK}/nonexistent.ckpt)
file(REMOVE_RECURSE ${WORK})
