"""Library functions that compose data, methods and the engine into the paper's results and return them (Fig. 1,
Fig. 3, Theorem 2.2, the memorization audit, features, reproduce). The ``memaware`` subcommands over them are in
``memaware.cli``; the figures they write are drawn by ``memaware.plots``."""
