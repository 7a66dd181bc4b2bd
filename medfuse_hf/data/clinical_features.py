"""The one place that knows clinical feature names: canonical names, units, LOINC codes, and each source's names.

Sources name the same measurement differently (PhysioNet 2012 `Na`, `Mg`; PhysioNet 2019 `Magnesium`), and
sometimes the same name means different things (P12 `MAP` is invasive arterial pressure, P19 `MAP` is not
specified). Loaders therefore map source names to canonical ones here, and every loaded dataset speaks one
vocabulary: `clinical_vocabulary()`, whose ids are stable (catalogue order), so that a checkpoint trained on one
source is indexed the same way at another.

LOINC codes are given only where the code is unambiguous for the measurement; a hospital matching by code should
still check its own mapping.
"""

from collections.abc import Iterable

from ..feature_vocabulary import FeatureSpec, FeatureVocabulary

# canonical name: (unit, LOINC code or None, description)
NUMERIC_FEATURES: dict[str, tuple[str, str | None, str]] = {
    "heart_rate": ("bpm", "8867-4", "Heart rate"),
    "respiratory_rate": ("breaths/min", "9279-1", "Respiratory rate"),
    "temperature": ("°C", "8310-5", "Body temperature"),
    "spo2": ("%", "59408-5", "Oxygen saturation by pulse oximetry"),
    "systolic_bp": ("mmHg", "8480-6", "Systolic blood pressure, measurement method not specified"),
    "diastolic_bp": ("mmHg", "8462-4", "Diastolic blood pressure, measurement method not specified"),
    "mean_bp": ("mmHg", "8478-0", "Mean arterial pressure, measurement method not specified"),
    "arterial_systolic_bp": ("mmHg", None, "Invasive (arterial line) systolic blood pressure"),
    "arterial_diastolic_bp": ("mmHg", None, "Invasive (arterial line) diastolic blood pressure"),
    "arterial_mean_bp": ("mmHg", None, "Invasive (arterial line) mean arterial pressure"),
    "noninvasive_systolic_bp": ("mmHg", None, "Non-invasive (cuff) systolic blood pressure"),
    "noninvasive_diastolic_bp": ("mmHg", None, "Non-invasive (cuff) diastolic blood pressure"),
    "noninvasive_mean_bp": ("mmHg", None, "Non-invasive (cuff) mean arterial pressure"),
    "etco2": ("mmHg", None, "End-tidal carbon dioxide"),
    "gcs": ("points", "9269-2", "Glasgow Coma Scale total score (3-15)"),
    "urine_output": ("mL", None, "Urine output since the previous measurement"),
    "mechanical_ventilation": ("flag", None, "Mechanical ventilation in use (recorded as 1 when present)"),
    "fio2": ("fraction", "3150-0", "Fraction of inspired oxygen (0-1)"),
    "weight": ("kg", "29463-7", "Body weight"),
    "height": ("cm", "8302-2", "Body height"),
    "age": ("years", None, "Age at ICU admission"),
    "sodium": ("mmol/L", "2951-2", "Serum sodium"),
    "potassium": ("mmol/L", "2823-3", "Serum potassium"),
    "chloride": ("mmol/L", "2075-0", "Serum chloride"),
    "bicarbonate": ("mmol/L", "1963-8", "Serum bicarbonate"),
    "bun": ("mg/dL", "3094-0", "Blood urea nitrogen"),
    "creatinine": ("mg/dL", "2160-0", "Serum creatinine"),
    "glucose": ("mg/dL", "2345-7", "Serum glucose"),
    "lactate": ("mmol/L", "2524-7", "Lactate"),
    "magnesium": ("mg/dL", None, "Serum magnesium (P12 documents mmol/L, but its values match P19's mg/dL)"),
    "calcium": ("mg/dL", "17861-6", "Serum calcium"),
    "phosphate": ("mg/dL", "2777-1", "Serum phosphate"),
    "albumin": ("g/dL", "1751-7", "Serum albumin"),
    "alt": ("IU/L", "1742-6", "Alanine transaminase"),
    "ast": ("IU/L", "1920-8", "Aspartate transaminase"),
    "alkaline_phosphatase": ("IU/L", "6768-6", "Alkaline phosphatase"),
    "bilirubin_total": ("mg/dL", "1975-2", "Total bilirubin"),
    "bilirubin_direct": ("mg/dL", "1968-7", "Direct bilirubin"),
    "cholesterol": ("mg/dL", "2093-3", "Total cholesterol"),
    "troponin_i": ("ng/mL", "10839-9", "Cardiac troponin I"),
    "troponin_t": ("ng/mL", "6598-7", "Cardiac troponin T"),
    "hematocrit": ("%", "4544-3", "Hematocrit"),
    "hemoglobin": ("g/dL", "718-7", "Hemoglobin"),
    "platelets": ("10^3/µL", "777-3", "Platelet count"),
    "wbc": ("10^3/µL", "6690-2", "White blood cell count"),
    "ph": ("pH", "2744-1", "Arterial blood pH"),
    "paco2": ("mmHg", "2019-8", "Arterial partial pressure of CO2"),
    "pao2": ("mmHg", "2703-7", "Arterial partial pressure of O2"),
    "sao2": ("%", "2708-6", "Arterial oxygen saturation"),
    "base_excess": ("mmol/L", None, "Base excess"),
    "ptt": ("s", "3173-2", "Activated partial thromboplastin time"),
    "fibrinogen": ("mg/dL", "3255-7", "Fibrinogen"),
}

# canonical name: (levels, description); levels are the sources' codes as text
CATEGORICAL_FEATURES: dict[str, tuple[list[str], str]] = {
    "gender": (["0", "1"], "Sex as recorded: 0 female, 1 male"),
    "icu_type": (
        ["1", "2", "3", "4"],
        "ICU type: 1 coronary care unit, 2 cardiac surgery recovery unit, 3 medical ICU, 4 surgical ICU",
    ),
}

# PhysioNet 2012 parameter -> canonical name (descriptors and time series alike)
PHYSIONET2012_NAMES: dict[str, str] = {
    "Age": "age", "Gender": "gender", "Height": "height", "ICUType": "icu_type", "Weight": "weight",
    "ALP": "alkaline_phosphatase", "ALT": "alt", "AST": "ast", "Albumin": "albumin", "BUN": "bun",
    "Bilirubin": "bilirubin_total", "Cholesterol": "cholesterol", "Creatinine": "creatinine",
    "DiasABP": "arterial_diastolic_bp", "FiO2": "fio2", "GCS": "gcs", "Glucose": "glucose", "HCO3": "bicarbonate",
    "HCT": "hematocrit", "HR": "heart_rate", "K": "potassium", "Lactate": "lactate", "MAP": "arterial_mean_bp",
    "MechVent": "mechanical_ventilation", "Mg": "magnesium", "NIDiasABP": "noninvasive_diastolic_bp",
    "NIMAP": "noninvasive_mean_bp", "NISysABP": "noninvasive_systolic_bp", "Na": "sodium", "PaCO2": "paco2",
    "PaO2": "pao2", "Platelets": "platelets", "RespRate": "respiratory_rate", "SaO2": "sao2",
    "SysABP": "arterial_systolic_bp", "Temp": "temperature", "TroponinI": "troponin_i", "TroponinT": "troponin_t",
    "Urine": "urine_output", "WBC": "wbc", "pH": "ph",
}

# PhysioNet 2019 column -> canonical name (Unit1/Unit2, the ICU flags, map onto icu_type in the loader)
PHYSIONET2019_NAMES: dict[str, str] = {
    "HR": "heart_rate", "O2Sat": "spo2", "Temp": "temperature", "SBP": "systolic_bp", "MAP": "mean_bp",
    "DBP": "diastolic_bp", "Resp": "respiratory_rate", "EtCO2": "etco2", "BaseExcess": "base_excess",
    "HCO3": "bicarbonate", "FiO2": "fio2", "pH": "ph", "PaCO2": "paco2", "SaO2": "sao2", "AST": "ast", "BUN": "bun",
    "Alkalinephos": "alkaline_phosphatase", "Calcium": "calcium", "Chloride": "chloride", "Creatinine": "creatinine",
    "Bilirubin_direct": "bilirubin_direct", "Glucose": "glucose", "Lactate": "lactate", "Magnesium": "magnesium",
    "Phosphate": "phosphate", "Potassium": "potassium", "Bilirubin_total": "bilirubin_total",
    "TroponinI": "troponin_i", "Hct": "hematocrit", "Hgb": "hemoglobin", "PTT": "ptt", "WBC": "wbc",
    "Fibrinogen": "fibrinogen", "Platelets": "platelets", "Age": "age", "Gender": "gender",
}

# MIMIC-III ITEMID -> canonical name, for CHARTEVENTS (CareVue and MetaVision ids) and LABEVENTS. Every id was
# checked against the labels and units of the MIMIC-III demo's D_ITEMS / D_LABITEMS. The blood-gas pCO2/pO2 ids
# (50818, 50821) do not say whether the specimen was arterial; they map to paco2/pao2 as is common practice.
MIMIC3_ITEMS: dict[int, str] = {
    211: "heart_rate", 220045: "heart_rate",
    618: "respiratory_rate", 615: "respiratory_rate", 220210: "respiratory_rate", 224690: "respiratory_rate",
    646: "spo2", 220277: "spo2",
    676: "temperature", 223762: "temperature", 678: "temperature", 223761: "temperature",  # the last two in °F
    51: "arterial_systolic_bp", 220050: "arterial_systolic_bp",
    8368: "arterial_diastolic_bp", 220051: "arterial_diastolic_bp",
    52: "arterial_mean_bp", 220052: "arterial_mean_bp",
    455: "noninvasive_systolic_bp", 220179: "noninvasive_systolic_bp",
    8441: "noninvasive_diastolic_bp", 220180: "noninvasive_diastolic_bp",
    456: "noninvasive_mean_bp", 220181: "noninvasive_mean_bp",
    198: "gcs",
    762: "weight", 763: "weight", 224639: "weight", 226512: "weight",
    226730: "height",
    50983: "sodium", 50824: "sodium",
    50971: "potassium", 50822: "potassium",
    50902: "chloride", 50806: "chloride",
    50882: "bicarbonate",
    51006: "bun",
    50912: "creatinine",
    50931: "glucose", 50809: "glucose",
    50813: "lactate",
    50960: "magnesium",
    50893: "calcium",
    50970: "phosphate",
    50862: "albumin",
    50861: "alt",
    50878: "ast",
    50863: "alkaline_phosphatase",
    50885: "bilirubin_total",
    51221: "hematocrit", 50810: "hematocrit",
    51222: "hemoglobin", 50811: "hemoglobin",
    51265: "platelets",
    51301: "wbc", 51300: "wbc",
    50820: "ph",
    50818: "paco2",
    50821: "pao2",
    50802: "base_excess",
    51275: "ptt",
    51214: "fibrinogen",
    51003: "troponin_t",
    51002: "troponin_i",
    50907: "cholesterol",
}
MIMIC3_FAHRENHEIT_ITEMS = (678, 223761)


def catalogue_units(features: Iterable[str]) -> dict[str, str]:
    """The catalogue's unit of each of `features` it lists as numeric: what public releases' values are in."""
    return {name: NUMERIC_FEATURES[name][0] for name in features if name in NUMERIC_FEATURES}


def clinical_vocabulary(names: list[str] | None = None) -> FeatureVocabulary:
    """The canonical vocabulary (without statistics), in catalogue order; `names` keeps only those features.

    Fit value statistics on a training split with `FeatureVocabulary.fit_statistics`.
    """
    wanted = set(names) if names is not None else None
    unknown = sorted(wanted - set(NUMERIC_FEATURES) - set(CATEGORICAL_FEATURES)) if wanted else []
    if unknown:
        raise KeyError(f"features not in the clinical catalogue: {unknown}")
    specs = [
        FeatureSpec(name=name, unit=unit, code=code, description=description)
        for name, (unit, code, description) in NUMERIC_FEATURES.items()
        if wanted is None or name in wanted
    ] + [
        FeatureSpec(name=name, kind="categorical", categories=list(levels), description=description)
        for name, (levels, description) in CATEGORICAL_FEATURES.items()
        if wanted is None or name in wanted
    ]
    return FeatureVocabulary(specs)
