"""Run train_nn.py and have it send itself a signal right after its Nth
training step, or while it compiles the training step (N = 0): a
deterministic interruption (tests/test_resume.py, tests/test_run_safety.py).

    python tests/interrupt_run.py AT SIGNAL TRAIN_NN_ARGS...
    python tests/interrupt_run.py 7 SIGINT normal 1 --out runs/x --epochs 3
    python tests/interrupt_run.py 0 SIGTERM normal 1 --out runs/x --epochs 3
"""
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_nn  # noqa: E402


def main():
    at, signame, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    compile_step = train_nn.compile_training_step
    done = [0]

    def compile_signalling_step(net, recipe):
        if at == 0:  # as a user's Ctrl-C while Theano compiles
            os.kill(os.getpid(), getattr(signal, signame))
        step, learning_rate, buffers = compile_step(net, recipe)

        def signalling_step(images, labels):
            result = step(images, labels)
            done[0] += 1
            if done[0] == at:
                os.kill(os.getpid(), getattr(signal, signame))
            return result
        return signalling_step, learning_rate, buffers

    train_nn.compile_training_step = compile_signalling_step
    return train_nn.main(args)


if __name__ == "__main__":
    sys.exit(main())
