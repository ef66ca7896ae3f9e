"""Plant realistic bugs, one at a time, in a temporary copy of the project, and
check that the tests meant to catch each one fail with it and pass without it.

    python tests/plant_bugs.py                  # all of them (20-40 minutes)
    python tests/plant_bugs.py --list
    python tests/plant_bugs.py wrn-no-momentum-restart no-flips
    python tests/plant_bugs.py --keep           # leave the copy for a look
    python tests/plant_bugs.py --check          # seconds: texts found, tests named exist

The copy holds the files git tracks or would track (``git ls-files -co
--exclude-standard``). Each bug is a text substitution that must match exactly
once; the targeted tests run with this Python and the environment as it is
(set THEANO_FLAGS=base_compiledir=... to a private compile folder). The
unpatched copy runs every targeted test first and must pass. Prints a table:
bug, the targeted tests that failed, seconds. Exit status 0 when every bug was
caught by all of its expected tests and the unpatched copy passed.

Not part of the test suite (pytest collects test_*.py only): it runs the
suite's tests many times and takes minutes.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

W = "tests/test_wiring.py::"
S = "tests/test_sources.py::"
E = "tests/test_evaluation.py::"
RESUME = "tests/test_resume.py::"
U = "tests/test_user_path.py::"
O = "tests/test_old_weights.py::"
E2E = "tests/test_end_to_end.py::"
SWEEP = "tests/test_sweep.py::"
D = "tests/test_data.py::"
R = "tests/test_run_safety.py::"
UN = "tests/test_units.py::"
H = "tests/test_he_recipes.py::"
ORDER = UN + "test_every_unit_orders_bn_relu_weights_and_addition_as_fig4"
SAME = UN + "test_every_unit_computes_what_pytorch_computes"
SAME_SHORTCUT = UN + "test_every_shortcut_computes_what_pytorch_computes"
FU = "tests/test_fusion.py::"
WI = "tests/test_winograd.py::"
OP = "tests/test_ops.py::"
BE = "tests/test_bench.py::"


def wiring(test, family):
    return "%s%s[%s]" % (W, test, family)


LR = "test_every_step_uses_the_sources_learning_rate"
LOG = "test_log_csv_reports_the_learning_rate_the_steps_used"
MOMENTUM = "test_momentum_restarts_exactly_where_the_source_rebuilds_its_state"
DECAY = "test_weight_decay_reaches_the_parameters_the_source_decays"
BATCHES = "test_batches_are_padded_cropped_and_flipped_as_the_source_does"
NORMALISATION = "test_normalisation_comes_from_the_training_images_used"
OPTIMISER = "test_every_step_moves_the_parameters_by_the_sources_optimiser"
CHANGED = "[paper-recipe-changed]"  # test_wiring.py's run with every recipe flag set
DAMAGED = "test_resume_refuses_a_checkpoint_whose_optimiser_or_random_arrays_do_not_fit"

# name: (what the bug is, [(file, old text, new text)], [tests that must fail])
BUGS = {
    # -- the nine of issue 12 ------------------------------------------------------
    "wrn-no-momentum-restart": (
        "the WRN recipe no longer restarts the momentum at its milestones",
        [("train_nn.py", '"reset_momentum_at_milestones": True,',
          '"reset_momentum_at_milestones": False,')],
        [S + "test_momentum_restarts_where_the_source_rebuilds_its_state[paper-wrn]",
         wiring(MOMENTUM, "paper-wrn")]),
    "wrn-restart-skipped-by-the-loop": (
        "the loop ignores the recipe's momentum restart",
        [("train_nn.py", "buffer.set_value(np.zeros_like(buffer.get_value()))", "pass")],
        [wiring(MOMENTUM, "paper-wrn")]),
    "wrn-zero-padding": (
        "WRN's reflection padding replaced by zero padding",
        [("train_nn.py", '"pad_mode": "reflect",', '"pad_mode": "zero",')],
        [S + "test_recipe_values_are_the_sources[paper-wrn]", wiring(BATCHES, "paper-wrn")]),
    "no-flips": (
        "training batches never flipped",
        [("utils.py", 'plan["flip"][start:stop], pad, pad_mode)',
          'plan["flip"][start:stop] & False, pad, pad_mode)')],
        [wiring(BATCHES, "paper-preresnet")]),
    "paper-decay-seed-way": (
        "the paper recipe's weight decay applied the seed's way (L2 loss on W and gamma)",
        [("train_nn.py", "# batch-norm scale and shift and the classifier's bias included.\n"
                         '        "decay": "gradient_all",',
          "# batch-norm scale and shift and the classifier's bias included.\n"
          '        "decay": "l2_loss_regularizable",')],
        [S + "test_weight_decay_reaches_the_parameters_the_source_decays[paper-preresnet]",
         wiring(DECAY, "paper-preresnet")]),
    "paper-no-decay": (
        "the paper recipe's weight decay not applied at all (the step ignores it)",
        [("train_nn.py", 'net.output, params, recipe["weight_decay"],',
          "net.output, params, 0.0,")],
        [wiring(DECAY, "paper-preresnet")]),
    "normalise-with-test-images": (
        "normalisation statistics taken from the test images",
        [("train_nn.py", 'utils.normalisation_stats(recipe["normalisation"], self.train_x)',
          'utils.normalisation_stats(recipe["normalisation"], self.test_x)')],
        [wiring(NORMALISATION, "paper-preresnet"), wiring(BATCHES, "paper-preresnet")]),
    "basic-stride-on-second-conv": (
        "the basic unit's stride moved from the first to the second convolution",
        [("models.py", 'stride_on = 0 if block == "basic"', 'stride_on = 1 if block == "basic"')],
        [S + "test_every_convolution_has_the_sources_kernel_stride_and_planes"
             "[normal-2-1-paper]"]),
    "bn-momentum-0.2": (
        "the paper architecture's batch-norm momentum 0.1 changed to 0.2",
        [("models.py", '"batch_norm": {"epsilon": 1e-5, "alpha": 0.1, "running": "var"}',
          '"batch_norm": {"epsilon": 1e-5, "alpha": 0.2, "running": "var"}')],
        [S + "test_every_batch_norm_has_the_sources_epsilon_momentum_and_running_variance"
             "[normal-2-1-paper]"]),
    "he-fan-in": (
        "He initialisation on fan-in instead of the authors' fan-out",
        [("models.py", "math.sqrt(2.0 / (size * size * out_channels))",
          "math.sqrt(2.0 / (size * size * in_channels))")],
        [S + "test_paper_initialisation_is_the_authors[normal-2-1]"]),
    "confusion-transposed": (
        "the test report's confusion matrix transposed",
        [("models.py", "np.bincount(labels * k + predictions",
          "np.bincount(predictions * k + labels")],
        [S + "test_confusion_matrix_rows_are_the_true_class"]),
    "loop-previous-epoch-lr": (
        "the training loop uses the previous epoch's learning rate",
        [("train_nn.py", 'rate = learning_rate(recipe, epoch, progress["iteration"])',
          'rate = learning_rate(recipe, max(epoch - 1, 0), progress["iteration"])')],
        [wiring(LR, "paper-preresnet"), wiring(LOG, "paper-preresnet")]),
    # -- more of the same kinds -----------------------------------------------------
    "loop-previous-epoch-lr-log-recomputed": (
        "the same, with log.csv's lr recomputed from the schedule as before issue 12",
        [("train_nn.py", 'rate = learning_rate(recipe, epoch, progress["iteration"])',
          'rate = learning_rate(recipe, max(epoch - 1, 0), progress["iteration"])'),
         ("train_nn.py", '"lr": progress["lr"],',
          '"lr": learning_rate(recipe, epoch, progress["iteration"] - 1),')],
        [wiring(LR, "paper-preresnet"), wiring(LOG, "paper-preresnet")]),
    "preresnet-milestones-off-by-one": (
        "fb.resnet.torch's decay at epochs 82 and 123 instead of 81 and 122",
        [("train_nn.py", '"lr_milestones": [80, 121],', '"lr_milestones": [81, 122],')],
        [S + "test_learning_rate_of_every_epoch_is_the_sources[paper-preresnet]",
         wiring(LR, "paper-preresnet")]),
    "wrn-factor-0.1": (
        "WRN's learning rate divided by 10 instead of 5",
        [("train_nn.py", '"lr_factor": 0.2,', '"lr_factor": 0.1,')],
        [S + "test_learning_rate_of_every_epoch_is_the_sources[paper-wrn]",
         wiring(LR, "paper-wrn")]),
    "bn-running-inv-std": (
        "the paper architecture's running average of 1/std instead of the variance",
        [("models.py", '"batch_norm": {"epsilon": 1e-5, "alpha": 0.1, "running": "var"}',
          '"batch_norm": {"epsilon": 1e-5, "alpha": 0.1, "running": "inv_std"}')],
        [S + "test_every_batch_norm_has_the_sources_epsilon_momentum_and_running_variance"
             "[bottleneck-2-1-paper]"]),
    "bottleneck-stride-on-3x3": (
        "the paper bottleneck's stride on the 3x3 instead of the first 1x1",
        [("models.py", '"bottleneck_stride_on": 0,', '"bottleneck_stride_on": 1,')],
        [S + "test_every_convolution_has_the_sources_kernel_stride_and_planes"
             "[bottleneck-2-1-paper]"]),
    "plain-momentum": (
        "Torch's SGD without the Nesterov term",
        [("engine/updates.py",
          "return new_v, p - lr * (g + m * new_v)",
          "return new_v, p - lr * new_v")],
        [wiring(OPTIMISER, "paper-preresnet")]),
    "seed-decay-on-everything": (
        "the seed recipe's L2 penalty replaced by Torch's decay of every parameter",
        [("train_nn.py", '"decay": "l2_loss_regularizable",', '"decay": "gradient_all",')],
        [S + "test_weight_decay_reaches_the_parameters_the_source_decays[seed]",
         wiring(DECAY, "seed")]),
    "paper-pixel-mean": (
        "the paper recipe normalised by the mean image instead of per-channel mean/std",
        [("train_nn.py", '"normalisation": "channel_mean_std",\n        "pad": 4,\n'
                         '        "pad_mode": "zero",  # t.RandomCrop',
          '"normalisation": "pixel_mean",\n        "pad": 4,\n'
          '        "pad_mode": "zero",  # t.RandomCrop')],
        [S + "test_recipe_values_are_the_sources[paper-preresnet]",
         wiring(NORMALISATION, "paper-preresnet")]),
    # -- issue 22: the units and shortcuts of He et al. 2016, He et al. 2015's recipe --
    "relu-before-add-without-relu": (
        "unit (c) without the ReLU before the addition",
        [("models.py", '"pre": "", "last": "BR", "after": "", "basic_grow": "zero-pad"}),',
          '"pre": "", "last": "B", "after": "", "basic_grow": "zero-pad"}),')],
        [ORDER + "[relu-before-add-normal]", SAME + "[relu-before-add-normal]"]),
    "bn-after-add-without-relu": (
        "unit (b) with BN but no ReLU after the addition",
        [("models.py", '"pre": "", "last": "", "after": "BR",',
          '"pre": "", "last": "", "after": "B",')],
        [ORDER + "[bn-after-add-bottleneck]", SAME + "[bn-after-add-bottleneck]"]),
    "no-extra-activation-after-the-last-unit": (
        "the pre-activation nets' last unit without its extra ReLU (BN kept)",
        [("models.py", 'network = activation(network, order["pre"], spec, "head")',
          'network = activation(network, order["pre"].replace("R", ""), spec, "head")')],
        [UN + "test_stem_and_head_activations_are_the_appendixs[relu-preact-normal]",
         SAME + "[relu-preact-normal]"]),
    "zero-pad-zeros-first": (
        "option A's zero channels before the input's instead of after",
        [("models.py", "return T.concatenate([kept, zeros], axis=1)",
          "return T.concatenate([zeros, kept], axis=1)")],
        [UN + "test_zero_padded_shortcut_subsamples_and_appends_zero_channels",
         SAME + "[original-normal]"]),
    "zero-pad-odd-pixels": (
        "option A subsampling the odd rows and columns",
        [("models.py", "kept = input[:, :, ::self.stride, ::self.stride]",
          "kept = input[:, :, 1::self.stride, 1::self.stride]")],
        [UN + "test_zero_padded_shortcut_subsamples_and_appends_zero_channels",
         SAME + "[relu-preact-normal]"]),
    "dropout-shortcut-inverted": (
        "the dropout shortcut as inverted dropout (expectation 1, not [11]'s 0.5)",
        [("models.py", "on_shortcut = 1 - values[0]", "on_shortcut = 1")],
        [UN + "test_dropout_shortcut_drops_half_of_every_shortcut_as_dropout_of_its_reference",
         SAME_SHORTCUT + "[dropout:0.5]"]),
    "gating-exclusive-swapped": (
        "exclusive and shortcut-only gating swapped",
        [("models.py", 'kind == "exclusive-gating",\n                              name=',
          'kind != "exclusive-gating",\n                              name=')],
        [UN + "test_gates_are_a_sigmoid_1x1_convolution_of_the_unit_input"
             "[exclusive-gating-True]", SAME_SHORTCUT + "[exclusive-gating:-2]",
         SAME_SHORTCUT + "[shortcut-gating:0]"]),
    "projection-without-bn": (
        "the original unit's projections without their batch norm",
        [("models.py", 'order["last"].replace("R", ""), spec,', '"", spec,')],
        [UN + "test_shortcuts_are_identity_but_where_the_shape_grows[bottleneck-original]",
         UN + "test_1x1_conv_shortcut_replaces_every_identity_with_conv_and_bn",
         SAME + "[original-bottleneck]", SAME_SHORTCUT + "[conv1x1]"]),
    "projection-bias": (
        "a bias on every projection (41,984 -> 42,432 parameters in ResNet-1001's)",
        [("models.py", 'shortcut_out = conv(source, out_channels, 1, stride, spec["projection_init"],'
                       '\n                            name + ".projection")',
          'shortcut_out = conv(source, out_channels, 1, stride, spec["projection_init"],'
          '\n                            name + ".projection", bias=0.0)')],
        [UN + "test_preresnet_parameter_counts_are_he2016_table4s"]),
    "he2015-milestones-one-late": (
        "He et al. 2015's decays one iteration late (iteration > 32000)",
        [("train_nn.py", 'sum(iteration >= m for m in recipe["lr_milestone_iters"])',
          'sum(iteration > m for m in recipe["lr_milestone_iters"])')],
        [H + "test_he2015_learning_rate_of_every_iteration_is_the_papers[he2015]",
         H + "test_he2015_learning_rate_of_every_iteration_is_the_papers[he2015-warmup]"]),
    "he2015-no-warmup": (
        "ResNet-110's recipe without its 400-iteration warm-up",
        [("train_nn.py", "    warmup_iters=400)", "    warmup_iters=0)")],
        [H + "test_he2015_learning_rate_of_every_iteration_is_the_papers[he2015-warmup]"]),
    "he2015-trains-on-45k": (
        "He et al. 2015's recipe training on the 45k split",
        [("train_nn.py", '"val_size": 0,\n    # Every iteration',
          '"val_size": 5000,\n    # Every iteration')],
        [H + "test_he2015_recipe_values_are_the_papers[he2015]"]),
    "caffe-momentum-nesterov": (
        "Caffe's momentum computed as Nesterov's",
        [("engine/updates.py", "return new_v, p + new_v",
          "return new_v, p + m * new_v - lr * g")],
        [H + "test_caffe_momentum_is_caffes_update"]),
    "loop-ignores-max-iters": (
        "the loop runs the last epoch whole, past max_iters",
        [("train_nn.py", 'last = min(last, first + recipe["max_iters"] - progress["iteration"])',
          "last = last")],
        [H + "test_loop_stops_at_max_iters_inside_an_epoch"]),
    "resnet-1k-layers-batch-128": (
        "the released code's recipe at mini-batch 128",
        [("train_nn.py", "    batch_size=64)", "    batch_size=128)")],
        [H + "test_resnet_1k_layers_recipe_is_its_readmes_command_on_fb_resnet_torch"]),
    "preresnet1001-numbers-swapped": (
        "PreResNet-1001's batch-128 number given as 4.62",
        [("models.py", '("preresnet1001", "cifar10", False, "paper"): 4.92,',
          '("preresnet1001", "cifar10", False, "paper"): 4.62,')],
        [H + "test_units_and_shortcuts_have_he2016s_numbers",
         "tests/test_sweep.py::test_published_numbers_match_the_programs"]),
    "bn-average-biased-variance": (
        "the running variance averaged from the biased batch variance (the one-node update)",
        [("engine/layers.py", "keep * r + alpha * ((b * c) / (c - 1))", "keep * r + alpha * b")],
        ["tests/test_layers.py::test_every_get_output_setting_normalises_and_updates_as_"
         "documented[c_ops-None-None-False-paper]"]),
    "decay-subtracted": (
        "the weight decay subtracted from the gradient (the one-node decay)",
        [("engine/updates.py", "[sg + d * sp]", "[sg - d * sp]")],
        [S + "test_weight_decay_reaches_the_parameters_the_source_decays[paper-preresnet]"]),
    "sweep-paper-number-for-every-recipe": (
        "the sweep's report compares every recipe with the paper recipe's number",
        [("sweep/table.py", 'for choice in (published_recipe(recipe), "paper"):',
          'for choice in ("paper", published_recipe(recipe)):')],
        [H + "test_every_published_number_is_in_the_sweeps_table"]),
    # -- run safety (issue 23) ------------------------------------------------------
    "publish-folder-unchecked": (
        "a full run's publish folder is not checked before compiling",
        [("train_nn.py", 'if trainer.run_record()["full_recipe"]:', "if False:")],
        [R + "test_a_publish_folder_that_cannot_be_made_stops_the_run_before_compiling"]),
    "disk-room-unchecked": (
        "a disk without room for the run's checkpoints and weights is not noticed",
        [("train_nn.py", "        if need > free:", "        if False:")],
        [R + "test_a_disk_without_room_for_the_runs_files_stops_it_before_compiling",
         R + "test_a_small_disk_stops_the_run_before_compiling"]),
    "publish-failure-traceback": (
        "a publish folder broken during the run ends it in a traceback",
        [("train_nn.py", "    problem = utils.unwritable(folder)\n    if problem:\n"
                         "        raise UserError(problem)\n", "")],
        [R + "test_a_run_whose_publish_folder_breaks_meanwhile_says_how_to_publish_it"]),
    "finished-run-never-published": (
        "--resume of a finished run that could not publish says 'nothing to do'",
        [("train_nn.py", 'if record.get("full_recipe") and not os.path.exists(target):',
          "if False:")],
        [R + "test_a_run_whose_publish_folder_breaks_meanwhile_says_how_to_publish_it"]),
    "finished-run-folder-reused": (
        "--out accepts a folder holding a finished run's files without its checkpoint",
        [("train_nn.py", "if set(found) - set(STARTUP_FILES):", "if False:")],
        [R + "test_a_folder_holding_a_finished_runs_files_is_refused_naming_them"]),
    "run-data-folder-ignored": (
        "test_model.py --run evaluates on data/ instead of the run's data folder",
        [("test_model.py", "            args.data_dir, source = run_data_dir(run_dir)",
          "            source = None")],
        [R + "test_test_model_uses_the_data_folder_the_run_used[--run]"]),
    "bad-crc-traceback": (
        "a weights file with a bad checksum ends in zipfile's traceback",
        [("utils.py", "except (zipfile.BadZipFile, zlib.error, EOFError, KeyError) as error:",
          "except (zlib.error, EOFError, KeyError) as error:")],
        [R + "test_a_damaged_weights_file_is_one_line[flip_bytes-damaged]",
         R + "test_read_npz_tells_damaged_from_truncated_from_foreign"]),
    "truncated-called-foreign": (
        "a truncated weights file is called 'not an .npz file'",
        [("utils.py", "if head == ZIP_SIGNATURE or not head:", "if not head:")],
        [R + "test_a_damaged_weights_file_is_one_line[truncate-truncated]",
         R + "test_a_damaged_checkpoint_is_one_line_saying_nothing_older_remains"
             "[truncate-truncated]"]),
    "stop-while-compiling-deferred": (
        "Ctrl-C while compiling waits for the first step and saves a checkpoint",
        [("train_nn.py", 'stop.at_once, stop.doing = True, "compiling the training step"',
          'stop.at_once, stop.doing = False, "compiling the training step"')],
        [R + "test_a_stop_while_compiling_says_to_start_again_and_that_command_works"
             "[SIGINT-130]"]),
    "start-leftovers-refused": (
        "the same command after a stop while compiling is refused (config.json is there)",
        [("train_nn.py", 'STARTUP_FILES = ("config.json", "output.log")', "STARTUP_FILES = ()")],
        [R + "test_a_stop_while_compiling_says_to_start_again_and_that_command_works"
             "[SIGINT-130]"]),
    "compile-lock-info-shown": (
        "Theano's compile-lock INFO lines reach the user",
        [("engine/compat.py",
          'logging.getLogger("theano.gof.compilelock").addFilter(compile_lock_waits)\n', "")],
        [R + "test_waiting_for_the_compile_lock_is_one_line_naming_the_holder"]),
    "gpp-warning-shown": (
        "Theano's 'g++ not detected' warning comes before our line",
        [("engine/compat.py", 'logging.getLogger("theano.configdefaults").addFilter('
                              '_drop_missing_compiler_warning)\n', "")],
        [R + "test_no_compiler_on_the_path_is_only_our_line[train_nn.py]",
         R + "test_no_compiler_on_the_path_is_only_our_line[test_model.py]"]),
    "limit-above-data-shortens": (
        "--limit above the training set's size makes a shortened run",
        [("train_nn.py", "if limit and limit >= count:", "if False:")],
        [R + "test_a_limit_above_the_training_set_trains_on_all_and_is_a_full_run"]),
    "log-float-noise": (
        "log.csv's errors keep float noise (79.17999999999999)",
        [("utils.py", "return round(100.0 * count / total, decimals)",
          "return 100.0 * count / total")],
        [R + "test_percent_is_rounded_to_the_resolution_of_its_count"]),
    "loss-float-noise": (
        "log.csv's training loss keeps float noise",
        [("train_nn.py", '"train_loss": utils.significant(progress["loss_sum"] / '
                         'progress["seen"], 7),',
          '"train_loss": progress["loss_sum"] / progress["seen"],')],
        [R + "test_log_csv_holds_what_was_measured_and_summary_how_the_run_ended"]),
    "no-summary-on-stop": (
        "a stopped run does not record how it stopped",
        [("train_nn.py", '            self.write_summary("stopped", "%s at %s" % '
                         '(interruption.name, where))\n', "")],
        [R + "test_a_stopped_run_records_where_it_stopped"]),
    "lr-drop-legend-always": (
        "curves.png names learning-rate drops the run never reached",
        [("utils.py", "drops = [drop for drop in lr_drops if drop <= last]",
          "drops = list(lr_drops)")],
        [R + "test_learning_rate_drops_are_in_the_legend_only_when_drawn"]),
    "one-epoch-invisible": (
        "curves.png draws a one-epoch run as lines without marks: nothing",
        [("utils.py", 'marker = dict(marker="o", markersize=4) if few else {}', "marker = {}")],
        [R + "test_curves_show_every_epoch_with_whole_epoch_ticks[1-6.37]"]),
    "log-axis-two-labels": (
        "a log error axis under a decade wide labels 1-2-3-5 only (two labels)",
        [("utils.py", "subs = (tuple(range(1, 10)) if high / low < 10 else",
          "subs = ((1.0, 2.0, 3.0, 5.0) if high / low < 10 else")],
        [R + "test_the_log_error_axis_labels_at_least_three_ticks[28-75]"]),
    "zero-errors-joined": (
        "epochs at 0 % error dropped from the log plot and their neighbours joined",
        [("utils.py", "        rows = [row for row in history if row.get(key) is not None]\n",
          "        rows = [row for row in history if row.get(key)]\n")],
        [R + "test_epochs_at_zero_error_break_the_log_line_and_are_counted"]),
    "title-without-epochs": (
        "curves.png's title names --limit but not the other shortened settings",
        [("train_nn.py", 'changes = self.run_record()["changes"]',
          'changes = ["--limit %d" % self.config["limit"]] if self.config["limit"] else []')],
        [R + "test_curves_title_names_every_shortened_setting"]),
    # -- issue 24: evaluation, the split, the command line, run ends, old weights --
    "eval-batch-statistics": (
        "evaluation normalises with each batch's statistics, not the running averages",
        [("models.py", "prediction = get_output(self.output, deterministic=True)",
          "prediction = get_output(self.output, deterministic=True, "
          "batch_norm_use_averages=False)")],
        [E + "test_the_log_test_model_and_predict_agree_with_the_numpy_forward_pass"]),
    "eval-updates-averages": (
        "evaluation uses the running averages but updates them as it goes",
        [("models.py", "prediction = get_output(self.output, deterministic=True)",
          "prediction = get_output(self.output, deterministic=True, "
          "batch_norm_update_averages=True)")],
        [E + "test_evaluating_changes_nothing_the_network_holds"]),
    "eval-dropout-on": (
        "evaluation with the running averages but dropout still dropping",
        [("models.py", "prediction = get_output(self.output, deterministic=True)",
          "prediction = get_output(self.output, batch_norm_use_averages=True, "
          "batch_norm_update_averages=False)")],
        [E + "test_bottleneck_and_wide_predictions_are_the_numpy_forward_passes[wide-1-2-0.3]"]),
    "finish-keeps-the-best-weights": (
        "finish() leaves the best weights in the network after testing them",
        [("train_nn.py", 'net.set_param_values(final_values, "final weights", info["name"])',
          "final_values = None")],
        [E + "test_finish_tests_the_best_weights_then_puts_the_final_ones_back"]),
    "finish-tests-the-final-weights-as-best": (
        "finish() reports the final weights' test error as the best weights'",
        [("train_nn.py", 'net.set_param_values(best["values"], "best weights", info["name"])',
          'best_values = best["values"]')],
        [E + "test_finish_tests_the_best_weights_then_puts_the_final_ones_back"]),
    "loop-ignores-drop-last": (
        "the loop keeps the last partial batch whatever the recipe says",
        [("train_nn.py", 'self.recipe["drop_last"])', "False)")],
        [wiring("test_the_last_partial_batch_is_dropped_or_kept_as_the_source_does",
                "paper-wrn"),
         W + "test_batch_flags_reach_every_batch" + CHANGED]),
    "validation-images-trained-on": (
        "the validation images stay in the training set",
        [("utils.py", "train, val = order[val_size:], order[:val_size]",
          "train, val = order, order[:val_size]")],
        [W + "test_training_and_validation_images_split_the_limited_set" + CHANGED]),
    "split-not-from-the-seed": (
        "the validation split drawn afresh in every process, not from the run's seed",
        [("utils.py", "order = np.random.default_rng([seed, 1]).permutation(len(images))",
          "order = np.random.default_rng().permutation(len(images))")],
        [W + "test_the_same_seed_gives_the_same_split" + CHANGED]),
    "momentum-hard-coded": (
        "the training step's momentum fixed at 0.9 (every recipe's), --momentum ignored",
        [("train_nn.py", 'np.float32(recipe["momentum"]))', "np.float32(0.9))")],
        [W + "test_optimiser_and_momentum_flags_reach_every_step" + CHANGED]),
    "loop-pads-by-4": (
        "the batches padded by 4 whatever --pad says",
        [("train_nn.py", 'self.stats, recipe["pad"], recipe["pad_mode"])',
          'self.stats, 4, recipe["pad_mode"])')],
        [W + "test_batch_flags_reach_every_batch" + CHANGED]),
    "warmup-counts-iterations-per-epoch": (
        "the learning rate computed from the iteration within the epoch: --warmup-iters "
        "warms up every epoch",
        [("train_nn.py", 'rate = learning_rate(recipe, epoch, progress["iteration"])',
          "rate = learning_rate(recipe, epoch, i)")],
        [W + "test_learning_rate_flags_reach_every_step" + CHANGED]),
    "publish-by-recipe-name": (
        "the published weights chosen by the recipe's name, --publish ignored",
        [("train_nn.py", 'if self.recipe["publish"] == "best_val":',
          'if self.recipe["name"] == "seed":')],
        [W + "test_publish_flag_reaches_the_choice_of_weights" + CHANGED]),
    "command-from-sys-argv": (
        "config.json's command taken from the process's argv, not main()'s arguments",
        [("train_nn.py", '["python", "train_nn.py"] + argv)))',
          '["python", "train_nn.py"] + sys.argv[1:])))')],
        [W + "test_config_json_records_the_command_given" + CHANGED]),
    "cifar100-coarse-label-names": (
        "CIFAR-100's class names read from the coarse list (then replaced by 'class N')",
        [("utils.py", '"names_key": "fine_label_names",', '"names_key": "coarse_label_names",')],
        [E2E + "test_cifar100_trains_and_tests_end_to_end"]),
    "cifar100-papers-cifar10-number": (
        "a CIFAR-100 network compared with the paper's CIFAR-10 error",
        [("models.py", 'if key[:3] == (base, network["dataset"], dropout > 0)}',
          'if key[:3] == (base, "cifar10", dropout > 0)}')],
        [E2E + "test_cifar100_networks_are_compared_with_the_papers_cifar100_numbers"]),
    "restore-takes-extra-arrays": (
        "resume accepts a checkpoint with more optimiser or random arrays than the network",
        [("train_nn.py", "if len(values) != len(variables):",
          "if len(values) < len(variables):")],
        [RESUME + DAMAGED + "[random-array-too-many]"]),
    "restore-takes-any-shape": (
        "resume loads optimiser arrays of any shape or dtype",
        [("train_nn.py",
          "if value.shape != current.shape or value.dtype != current.dtype:", "if False:")],
        [RESUME + DAMAGED + "[optimiser-array-of-another-shape]",
         RESUME + DAMAGED + "[optimiser-array-in-float64]"]),
    "nan-unchecked-in-epoch-1": (
        "a non-finite loss goes unnoticed in the first epoch",
        [("train_nn.py", "if not math.isfinite(loss):",
          "if epoch and not math.isfinite(loss):")],
        [RESUME + "test_non_finite_loss_in_the_first_epoch_stops_before_any_checkpoint"]),
    "second-ctrl-c-ignored": (
        "a second Ctrl-C is ignored: the run saves anyway",
        [("engine/loop.py", "raise KeyboardInterrupt", "return")],
        [RESUME + "test_a_second_ctrl_c_stops_at_once_and_writes_nothing"]),
    "default-weights-first-of-several": (
        "test_model.py takes the first of several published recipes without asking",
        [("test_model.py", "if len(found) == 1:", "if found:")],
        [U + "test_several_published_recipes_make_the_user_choose"]),
    "test-model-out-ignored": (
        "test_model.py writes its report next to the weights whatever --out says",
        [("test_model.py",
          'out = args.out or os.path.splitext(args.weights)[0] + "-test.json"',
          'out = os.path.splitext(args.weights)[0] + "-test.json"')],
        [U + "test_out_puts_the_report_there_and_nothing_next_to_the_weights"]),
    "run-silently-wins-over-weights": (
        "test_model.py --run with --weights drops --weights instead of refusing",
        [("test_model.py", 'parser.error("--run and --weights both name weights: give one")',
          "args.weights = None")],
        [U + "test_run_and_weights_together_are_a_usage_error"]),
    "old-mean-image-also-divided": (
        "an old file's inputs: the mean image subtracted, then divided by 255",
        [("test_model.py", '"std": np.ones((1, 1, 1), np.float32)}',
          '"std": np.full((1, 1, 1), 255, np.float32)}')],
        [O + "test_program_evaluates_a_2016_06_file"]),
    "old-2016-04-not-divided": (
        "the 2016-04 file's inputs not divided by 255",
        [("test_model.py", '"std": np.full((1, 1, 1), 255, np.float32)}',
          '"std": np.ones((1, 1, 1), np.float32)}')],
        [O + "test_program_evaluates_a_2016_04_file_divided_by_255"]),
    "old-default-per-channel": (
        "an old file without --pixel-mean evaluated with per-channel statistics",
        [("test_model.py", 'return utils.normalisation_stats("pixel_mean", data["train_x"])',
          'return utils.normalisation_stats("channel_mean_std", data["train_x"])')],
        [O + "test_without_pixel_mean_the_training_images_mean_is_subtracted"]),
    "pixel-mean-shape-unchecked": (
        "a --pixel-mean of any 3-d shape accepted (a per-channel mean broadcasts)",
        [("test_model.py", "if mean.shape != utils.IMAGE_SHAPE:", "if mean.ndim != 3:")],
        [O + "test_a_pixel_mean_of_another_shape_is_refused_in_one_line"]),
    "input-check-ignores-the-shift": (
        "the input check looks at the spread only, not at the mean",
        [("test_model.py", 'good = 1 / 3 < fit["spread"] < 3 and fit["shift"] < 2',
          'good = 1 / 3 < fit["spread"] < 3')],
        [O + "test_the_input_check_warns_when_inputs_are_not_prepared_as_in_training"]),
    "pklz-not-latin1": (
        "pickles unpickled as ASCII: a Python 2 file's array bytes cannot be read",
        [("utils.py", 'encoding="latin1"', 'encoding="ASCII"')],
        [D + "test_old_pklz_list_of_arrays_is_read_value_for_value[python2]"]),
    "sweep-array-ranges-merged": (
        "sweep/table.py writes the array 0,3 as 0-3 (finished tasks run again)",
        [("sweep/table.py", "if i + 1 == len(indices) or indices[i + 1] != value + 1:",
          "if i + 1 == len(indices):")],
        [SWEEP + "test_resubmitting_a_partly_finished_sweep_submits_the_rest_once"]),
    "sweep-asks-squeue-the-wrong-job": (
        "the guard against submitting twice asks squeue about the array, not the job",
        [("sweep/table.py", 'str(job["id"]), "-o"', 'str(job["array"]), "-o"')],
        [SWEEP + "test_resubmitting_a_partly_finished_sweep_submits_the_rest_once"]),
    "error-as-mean": (
        "errors computed as 100 * mean(wrong): 57 of 100 images is 56.99999999999999",
        [("models.py", "return 100.0 * int(np.count_nonzero(np.asarray(labels) != predictions)) / len(labels)",
          "return 100.0 * float(np.mean(np.asarray(labels) != predictions))")],
        [E + "test_error_percentages_are_one_division_of_the_wrong_count"]),
    "weights-in-a-run-on-default-data": (
        "test_model.py --weights RUN/weights_final.npz tests on data/, not the run's data folder",
        [("test_model.py", 'args.run or os.path.isfile(os.path.join(run_dir, "config.json"))):',
          "args.run):")],
        [R + "test_test_model_uses_the_data_folder_the_run_used[--weights]"]),
    "sweep-first-recipe-only": (
        "sweep/table.py --recipes paper,seed runs the first recipe only",
        [("sweep/table.py", "for recipe in chosen]", "for recipe in chosen[:1]]")],
        [SWEEP + "test_list_options_make_one_run_per_combination"]),
    "conv-holds-the-gil": (
        "the forward convolution keeps the GIL while it computes",
        [("engine/c_code/conv2d.c",
          "    Py_BEGIN_ALLOW_THREADS  /* the batch worker thread runs meanwhile */\n"
          "    const pr_map *m = scale ? &map : NULL;\n",
          "    {\n"
          "    const pr_map *m = scale ? &map : NULL;\n"),
         ("engine/c_code/conv2d.c",
          "               : pr_conv2d_direct(xd, wd, yd, B, C, H, W, M, k, s, m, ad);\n"
          "    Py_END_ALLOW_THREADS\n",
          "               : pr_conv2d_direct(xd, wd, yd, B, C, H, W, M, k, s, m, ad);\n"
          "    }\n")],
        ["tests/test_ops.py::test_ops_release_the_gil_so_the_batch_worker_runs_during_the_step"
         "[direct]",
         "tests/test_ops.py::test_ops_release_the_gil_so_the_batch_worker_runs_during_the_step"
         "[winograd]"]),
    "best-line-reworded": (
        "train_nn.py's best-on-validation line reworded: the sweep report's pattern misses it",
        [("train_nn.py", "best validation error %.2f %% at epoch %d; its test error: %s",
          "best validation error %.2f %% (epoch %d); its test error: %s")],
        [SWEEP + "test_report_takes_the_best_epochs_test_error_from_what_train_nn_prints"]),
    # -- the engine's fused and new kernel paths (issue 25) ------------------------
    "winograd-prologue-no-relu": (
        "Winograd's vector prologue (a batch norm read by the convolution) drops the ReLU",
        [("engine/c_code/conv2d.c", "    return map->relu ? (z < zero ? zero : z) : z;",
          "    return z;")],
        [FU + "test_fused_unit_gives_the_unfused_bits[normal-16-32-16-1-False-auto]"]),
    "fused-residual-dropped": (
        "the direct convolution forgets the residual it should add as it writes",
        [("engine/c_code/conv2d.c",
          "        const float *add = addend ? addend + (long)b * out_image : NULL;",
          "        const float *add = NULL;")],
        [FU + "test_fused_unit_gives_the_unfused_bits[normal-16-32-16-1-False-direct]"]),
    "bn-grad-residual-dropped": (
        "the batch-norm gradient inside the convolution's gradient drops the other "
        "readers' gradient (dx_residual)",
        [("engine/c_code/support.c", "                float v = as ? gs[q] + as[q] : gs[q];",
          "                float v = gs[q];")],
        [FU + "test_a_residual_sum_of_two_convolutions_and_a_shared_input_stay_correct",
         FU + "test_training_steps_give_the_unfused_bits[network0]"]),
    "dx-residual-rewrite-wrong-term": (
        "the dx_residual rewrite adds the convolution's own gradient instead of the other term",
        [("engine/fusion.py", "        candidates += [(a, [b]), (b, [a])]",
          "        candidates += [(a, [a]), (b, [b])]")],
        [FU + "test_a_residual_sum_of_two_convolutions_and_a_shared_input_stay_correct"]),
    "winograd4-input-transform": (
        "one constant of F(4x4,3x3)'s input transform wrong (0.25 for 0.5)",
        [("engine/c_code/winograd.c", "    r[1] = d4 - d1 - 2.5f * d2 - 0.5f * d3;",
          "    r[1] = d4 - d1 - 2.5f * d2 - 0.25f * d3;")],
        [WI + "test_winograd_matches_float64_on_every_network_shape[winograd4-16-32-16]"]),
    "winograd4-kernel-gradient-on-8x8": (
        "auto computes the kernel gradient of 8x8 images by F(4x4), the slower tile there",
        [("engine/c_code/winograd.c", "return part == PR_DW && H <= 8 && W <= 8 ? 2 : 4;",
          "return 4;")],
        [WI + "test_auto_chooses_each_part_by_its_shape[32-32-8-32-chosen3]"]),
    "plain-baseline-drops-nonlinearity": (
        "bench/speed.py's stock-Lasagne convolution refuses the nonlinearity models.conv passes",
        [("bench/speed.py", "W=lasagne.init.GlorotUniform(), b=None, nonlinearity=None, **kwargs):",
          "W=lasagne.init.GlorotUniform(), b=None, **kwargs):"),
         ("bench/speed.py", "W=W, b=b, nonlinearity=nonlinearity, **kwargs)",
          "W=W, b=b, nonlinearity=None, **kwargs)")],
        [BE + "test_the_plain_baseline_trains_the_same_network[network0]"]),
    "stride2-phase-offsets-swapped": (
        "the 3x3 stride-2 input gradient's polyphase taps with rows and columns swapped",
        [("engine/c_code/conv2d.c",
          "d->off[d->taps++] = (long)(1 - (i - a) / 2) * g->Wq + (1 - (j - b) / 2);",
          "d->off[d->taps++] = (long)(1 - (j - b) / 2) * g->Wq + (1 - (i - a) / 2);")],
        [OP + "test_every_network_convolution_matches_float64[16-32-32-3-2-direct]"]),
    "gemm1x1-kernel-gradient-last-image": (
        "the 1x1 sgemm path's kernel gradient keeps only each chunk's last image",
        [("engine/c_code/conv2d.c", "                           i ? &one : &zero, dw_chunk, &Ci);",
          "                           &zero, dw_chunk, &Ci);")],
        [OP + "test_every_network_convolution_matches_float64[16-32-64-1-1-gemm1x1]"]),
    "kernel-gradient-chunks-follow-threads": (
        "the kernel gradient's chunks of images sized by the thread count (results then "
        "depend on OMP_NUM_THREADS)",
        [("engine/c_code/conv2d.c", "nb_most = (B + PR_SLOTS - 1) / PR_SLOTS;",
          "nb_most = (B + threads - 1) / threads;")],
        [OP + "test_results_do_not_depend_on_the_number_of_threads",
         FU + "test_fused_results_do_not_depend_on_the_number_of_threads"]),
}


def copy_project(target):
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=PROJECT_DIR,
                           check=True, capture_output=True, text=True).stdout.splitlines()
    for name in names:
        source = os.path.join(PROJECT_DIR, name)
        if not os.path.isfile(source):
            continue  # deleted but not yet staged
        os.makedirs(os.path.dirname(os.path.join(target, name)), exist_ok=True)
        shutil.copy2(source, os.path.join(target, name))


def run_tests(copy, tests):
    """(exit status, failed test ids, seconds)."""
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfE", "-p",
                             "no:cacheprovider", "-o", "addopts="] + list(tests),
                            cwd=copy, capture_output=True, text=True, timeout=1800)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", result.stdout, re.M)
    return result.returncode, failed, time.time() - started, result.stdout


def apply(copy, substitutions):
    """Plant a bug; returns what to write back."""
    originals = {}
    for path, old, new in substitutions:
        full = os.path.join(copy, path)
        with open(full) as f:
            text = f.read()
        originals.setdefault(full, text)
        if text.count(old) != 1:
            raise SystemExit("%s: %r found %d times, expected once (the code changed: "
                             "update the bug)" % (path, old, text.count(old)))
        with open(full, "w") as f:
            f.write(text.replace(old, new))
    return originals


def check_bugs():
    """0 when every substitution matches once and every named test is
    collected; else the problems, one a line, and 1."""
    problems = []
    for name, (what, substitutions, expected) in BUGS.items():
        for path, old, new in substitutions:
            with open(os.path.join(PROJECT_DIR, path)) as f:
                found = f.read().count(old)
            if found != 1:
                problems.append("%s: its text is found %d times in %s" % (name, found, path))
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                                "-p", "no:cacheprovider", "tests"], cwd=PROJECT_DIR,
                               capture_output=True, text=True).stdout.splitlines()
    ids = {line.strip() for line in collected}
    for name, (what, substitutions, expected) in BUGS.items():
        for test in expected:
            if test not in ids and not any(i.startswith(test + "[") for i in ids):
                problems.append("%s: no test %s" % (name, test))
    for problem in problems:
        print(problem)
    print("%d bugs, %d problems" % (len(BUGS), len(problems)))
    return 1 if problems else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bugs", nargs="*", help="names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the bugs and exit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    parser.add_argument("--check", action="store_true",
                        help="only check, in seconds, that every bug's text is found once in "
                             "the project and every test it names exists (after a merge)")
    args = parser.parse_args()
    if args.check:
        return check_bugs()
    if args.list:
        for name, (what, _, tests) in BUGS.items():
            print("%-40s %s\n%40s caught by: %s" % (name, what, "", ", ".join(tests)))
        return 0
    unknown = [name for name in args.bugs if name not in BUGS]
    if unknown:
        parser.error("unknown bug(s): %s (see --list)" % ", ".join(unknown))
    chosen = args.bugs or list(BUGS)
    print("THEANO_FLAGS=%s" % os.environ.get("THEANO_FLAGS", ""), flush=True)
    copy = tempfile.mkdtemp(prefix="plant-bugs-")
    try:
        copy_project(copy)
        targeted = sorted({test for name in chosen for test in BUGS[name][2]})
        status, failed, seconds, output = run_tests(copy, targeted)
        print("unpatched copy: %d targeted tests, exit %d, %.0f s" % (
            len(targeted), status, seconds), flush=True)
        if status != 0:
            print(output[-5000:])
            return 1
        rows, missed = [], []
        for name in chosen:
            what, substitutions, expected = BUGS[name]
            originals = apply(copy, substitutions)
            try:
                status, failed, seconds, output = run_tests(copy, expected)
            finally:
                for path, text in originals.items():
                    with open(path, "w") as f:
                        f.write(text)
            caught = status == 1 and set(expected) <= set(failed)
            if not caught:
                missed.append(name)
                print(output[-3000:])
            rows.append((name, what, failed, seconds, caught))
            print("%s: %s, %.0f s: %s" % (name, "caught" if caught else "NOT CAUGHT", seconds,
                                          ", ".join(failed) or "no test failed"), flush=True)
        print("\n| bug | what | tests that failed | seconds |\n| --- | --- | --- | --- |")
        for name, what, failed, seconds, caught in rows:
            print("| %s | %s | %s | %.0f |" % (name if caught else name + " (NOT CAUGHT)", what,
                                               "<br>".join(t.replace("tests/", "") for t in failed),
                                               seconds))
        return 1 if missed else 0
    finally:
        if args.keep:
            print("copy kept: %s" % copy)
        else:
            shutil.rmtree(copy, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
