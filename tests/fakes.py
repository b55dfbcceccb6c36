"""Stand-ins shared by tests."""


class Interrupted(Exception):
  """Raised by `interrupting_bar` in place of a kill."""


def interrupting_bar(at_step: int):
  """A stand-in for `tqdm.tqdm` that raises `Interrupted` once its bar reaches `at_step`:
  patched into a module, it stops a run's loop right after that step's work."""

  class Bar:

    def __init__(self, *unused, initial=0, **unused_kwargs):
      self.n = initial

    def __enter__(self):
      return self

    def __exit__(self, *unused):
      return False

    def update(self, k):
      self.n += k
      if self.n >= at_step:
        raise Interrupted

    def set_postfix(self, **unused):
      pass

  return Bar
