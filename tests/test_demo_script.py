"""`make demo` passes optsar:train parameters that exist and that the algorithm accepts."""

from __future__ import annotations


def test_demo_schedules_are_parameters_the_train_algorithm_accepts(processing_provider):
    from scripts.demo import SCHEDULES

    alg = next(a for a in processing_provider.algorithms() if a.id() == "optsar:train")
    problems = []
    for model, schedule in SCHEDULES.items():
        for name, value in schedule.items():
            definition = alg.parameterDefinition(name)
            if definition is None:
                problems.append(f"{model}: optsar:train has no parameter {name}")
            elif not definition.checkValueIsAcceptable(value):
                problems.append(f"{model}: {name}={value!r} is not acceptable")
    assert problems == []
    # the time limits are what keeps a slow machine within the demo's ten minutes
    assert all(s.get("MAX_MINUTES", 0) > 0 for s in SCHEDULES.values())
    assert sum(s["MAX_MINUTES"] for s in SCHEDULES.values()) <= 9.5
