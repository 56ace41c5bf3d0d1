# Runs the deft CLI as a user would: version, help, and bad usage (exit 2).
function(run expect_rc)
  execute_process(COMMAND ${DEFT} ${ARGN} RESULT_VARIABLE rc
                  OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL expect_rc)
    message(FATAL_ERROR "deft ${ARGN}: exit ${rc}, want ${expect_rc}\n${out}${err}")
  endif()
  set(out "${out}${err}" PARENT_SCOPE)
endfunction()

run(0 --version)
if(NOT out MATCHES "^deft [0-9]+\\.[0-9]+\\.[0-9]+")
  message(FATAL_ERROR "deft --version printed '${out}'")
endif()
run(0 --help)
if(NOT out MATCHES "usage: deft")
  message(FATAL_ERROR "deft --help printed '${out}'")
endif()
run(0 list)
if(NOT out MATCHES "def" OR NOT out MATCHES "rbgs" OR NOT out MATCHES "powersgd fp16 bf16"
   OR NOT out MATCHES "lenet +61706 parameters in 10 tensors: 6x25 6 16x150"
   OR NOT out MATCHES "preresnet20 +271994 parameters in 61 tensors \\(\\+ 1376 BN"
   OR NOT out MATCHES "vgg11bn +2442570 parameters")
  message(FATAL_ERROR "deft list printed '${out}'")
endif()
run(2 --no-such-flag)
if(NOT out MATCHES "no-such-flag")
  message(FATAL_ERROR "bad flag message does not name the flag: '${out}'")
endif()
run(2)

# deft train: help, and every kind of bad usage exits 2 naming the flag,
# before any data is read.
run(0 train --help)
if(NOT out MATCHES "--ratio")
  message(FATAL_ERROR "deft train --help printed '${out}'")
endif()
foreach(bad "--ratio;0" "--ratio;abc" "--workers;0" "--lambda;1.5" "--lr;-1"
            "--batch;100;--workers;8" "--model;resnet" "--algo;adam"
            "--compressor;zip" "--no-such-flag" "--epochs" "--backend;tcp"
            "--algo;psync;--compressor;topk" "--lr-decay;0.5,2" "extra-arg"
            "--init;kaiming" "--bn-recalibrate;-1" "--model;preresnet"
            "--bn-recalibrate;3;--model;lenet" "--bn-recalibrate;often"
            "--nesterov;--momentum;0" "--dampening;1.5")
  run(2 train ${bad})
  list(GET bad 0 flag)
  string(REPLACE "--" "" name "${flag}")
  if(NOT out MATCHES "${name}")
    message(FATAL_ERROR "deft train ${bad}: message does not name ${flag}: '${out}'")
  endif()
endforeach()

# deft convex: help, and bad usage exits 2 naming the flag.
run(0 convex --help)
if(NOT out MATCHES "--algo")
  message(FATAL_ERROR "deft convex --help printed '${out}'")
endif()
foreach(bad "--algo;adam" "--ratio;0" "--workers;0" "--rounds;-3" "--bogus")
  run(2 convex ${bad})
  list(GET bad 0 flag)
  string(REPLACE "--" "" name "${flag}")
  if(NOT out MATCHES "${name}")
    message(FATAL_ERROR "deft convex ${bad}: message does not name ${flag}: '${out}'")
  endif()
endforeach()

# deft convex: the eclk options and the combinations that do not apply.
foreach(bad "--params;foo" "--delta-exp;-1" "--alpha;2" "--anchor-grad;x"
            "--algo;gd;--compressor;topk" "--algo;ecgd;--alpha;0.5"
            "--algo;ecgd;--theta1;0.1" "--algo;gd;--anchor-grad;global"
            "--algo;ecsgd;--delta-exp;1" "--algo;eclk;--lr;0.1")
  run(2 convex ${bad})
  list(LENGTH bad n)
  math(EXPR last "${n} - 2")
  list(GET bad ${last} flag)
  string(REPLACE "--" "" name "${flag}")
  if(NOT out MATCHES "${name}")
    message(FATAL_ERROR "deft convex ${bad}: message does not name ${flag}: '${out}'")
  endif()
endforeach()

# A LIBSVM file naming feature 900000000 is stored sparse: with 8 workers
# it is refused for its 2 rows (usage, naming --workers), with 1 it trains.
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/two.svm "1 3:1\n-1 900000000:2\n")
run(2 convex --data libsvm:${CMAKE_CURRENT_BINARY_DIR}/two.svm)
if(NOT out MATCHES "--workers")
  message(FATAL_ERROR "deft convex on two rows: '${out}'")
endif()
run(0 convex --data libsvm:${CMAKE_CURRENT_BINARY_DIR}/two.svm --workers 1
    --rounds 50 --quiet)
if(NOT out MATCHES "rel. suboptimality")
  message(FATAL_ERROR "deft convex on two rows, one worker: '${out}'")
endif()

# deft checkpoint: help, and bad usage exits 2 naming what is wrong.
run(0 checkpoint --help)
if(NOT out MATCHES "--workers K" OR NOT out MATCHES "--reshard")
  message(FATAL_ERROR "deft checkpoint --help printed '${out}'")
endif()
foreach(bad "checkpoint" "checkpoint;a;b" "checkpoint;f;--workers;0;--out;x"
            "checkpoint;f;--workers;3" "checkpoint;f;--out;x"
            "checkpoint;f;--workers;3;--out;x;--reshard=half" "checkpoint;--bogus")
  run(2 ${bad})
  if(NOT out MATCHES "deft checkpoint: ")
    message(FATAL_ERROR "deft ${bad}: '${out}'")
  endif()
endforeach()
foreach(pair "checkpoint;f;--workers;0;--out;x=--workers 0"
             "checkpoint;f;--workers;3=needs both --workers K and --out"
             "checkpoint;f;--workers;3;--out;x;--reshard=half=the rules are mean")
  string(REGEX REPLACE "=[^=]*$" "" bad "${pair}")
  string(REGEX REPLACE "^.*=" "" want "${pair}")
  run(2 ${bad})
  if(NOT out MATCHES "${want}")
    message(FATAL_ERROR "deft ${bad}: message '${out}' does not say '${want}'")
  endif()
endforeach()
run(2 train --reshard)
if(NOT out MATCHES "--reshard applies to --resume")
  message(FATAL_ERROR "deft train --reshard without --resume: '${out}'")
endif()
