"""The planner: state snapshots, expectation checkers, problem detectors, steps, search, execution."""
