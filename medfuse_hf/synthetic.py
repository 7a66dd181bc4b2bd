"""A small synthetic ICU cohort whose label is U-shaped in one value, for tests and the smoke job.

The MedFuse paper's "equifinality" case: hyponatraemia and hypernatraemia both raise risk, so a model must
learn that *both* ends of the sodium range matter. Two distractor features carry no signal.
"""

import numpy as np

SODIUM_NORMAL_RANGE = (135.0, 145.0)


def make_sodium_cohort(num_patients: int, seed: int = 0, max_events: int = 40) -> list[dict]:
    """Patients as `{"record_id", "feature", "value", "time", "label"}` dicts, times in hours over 48 h."""
    rng = np.random.default_rng(seed)
    patients = []
    for record_id in range(num_patients):
        sodium_level = rng.normal(140.0, 7.0)
        num_events = int(rng.integers(6, max_events + 1))
        names = rng.choice(["sodium", "heart_rate", "creatinine"], size=num_events, p=[0.3, 0.4, 0.3])
        names[0] = "sodium"  # every patient has at least one sodium measurement
        typical = {"sodium": sodium_level, "heart_rate": rng.normal(85.0, 12.0), "creatinine": rng.lognormal(0.0, 0.4)}
        noise = {"sodium": 1.0, "heart_rate": 8.0, "creatinine": 0.1}
        values = [round(float(typical[name] + rng.normal(0.0, noise[name])), 2) for name in names]
        times = np.round(np.sort(rng.uniform(0.0, 48.0, size=num_events)), 3).tolist()
        low, high = SODIUM_NORMAL_RANGE
        label = int(not low <= sodium_level <= high)
        patients.append(
            {"record_id": record_id, "feature": names.tolist(), "value": values, "time": times, "label": label}
        )
    return patients
