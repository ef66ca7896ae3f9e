"""Run train_nn.py with the paper recipes made short in the recipes themselves,
so that a run of them is a full-recipe run that publishes its weights, as a
user's run does after 164 or 200 epochs (tests/test_run_safety.py).

    python tests/full_recipe_run.py EPOCHS BATCH TRAIN_NN_ARGS...
    python tests/full_recipe_run.py 1 100 normal 1 --data-dir D --out runs/x

With FILE_AT_THE_END=PATH in the environment, a file is put at PATH just
before the run publishes its weights: a publish folder that breaks while the
run trains (a disk that fills, a folder made read-only meanwhile).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_nn  # noqa: E402


def main():
    epochs, batch, args = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    for name in ("paper-preresnet", "paper-wrn"):
        train_nn.RECIPES[name].update(epochs=epochs, batch_size=batch)
    blocker = os.environ.get("FILE_AT_THE_END")
    if blocker:
        finish = train_nn.Trainer.finish

        def finish_after_breaking_the_publish_folder(self):
            with open(blocker, "w") as f:
                f.write("in the way\n")
            return finish(self)
        train_nn.Trainer.finish = finish_after_breaking_the_publish_folder
    return train_nn.main(args)


if __name__ == "__main__":
    sys.exit(main())
