"""Run train_nn.py and interrupt it right after its Nth training step, or
while it compiles the training step (N = 0): a deterministic interruption
(tests/test_resume.py, tests/test_run_safety.py).

    python tests/interrupt_run.py AT SIGNALS TRAIN_NN_ARGS...
    python tests/interrupt_run.py 7 SIGINT normal 1 --out runs/x --epochs 3
    python tests/interrupt_run.py 0 SIGTERM normal 1 --out runs/x --epochs 3
    python tests/interrupt_run.py 7 SIGINT,SIGINT ...     # a second Ctrl-C at once
    python tests/interrupt_run.py 7 wait ...

SIGNALS: the signals the program sends itself at that point, in order; or
``wait``: after step AT it prints ``waiting after step AT`` on stderr and waits
for a line on stdin, so that a signal sent from outside meanwhile (before the
line) lands in the middle of the run, whatever the machine's speed.
"""
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_nn  # noqa: E402


def main():
    at, signals, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    compile_step = train_nn.compile_training_step
    done = [0]

    def send():
        for name in signals.split(","):
            os.kill(os.getpid(), getattr(signal, name))

    def compile_signalling_step(net, recipe):
        if at == 0:  # as a user's Ctrl-C while Theano compiles
            send()
        step, learning_rate, buffers = compile_step(net, recipe)

        def signalling_step(images, labels):
            result = step(images, labels)
            done[0] += 1
            if done[0] == at and signals == "wait":
                sys.stderr.write("waiting after step %d\n" % at)
                sys.stderr.flush()
                sys.stdin.readline()
            elif done[0] == at:
                send()
            return result
        return signalling_step, learning_rate, buffers

    train_nn.compile_training_step = compile_signalling_step
    return train_nn.main(args)


if __name__ == "__main__":
    sys.exit(main())
