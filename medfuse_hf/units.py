"""Units of clinical measurements, compared as two hospitals' systems write them: the loader, the tokenizer and the
transfer code all decide "same unit?" here, so that they never disagree."""

import unicodedata
from collections.abc import Mapping

from .feature_vocabulary import FeatureVocabulary

UnitConversion = float | tuple[float, float]  # target value = scale × source value (+ offset, e.g. °F -> °C)
INTO = "into"  # a unit-conversion table's key naming the unit its rows are converted into


def unit_key(unit: str | None) -> str | None:
    """Units compared as written, up to spaces, Unicode look-alikes (the micro sign µ and the Greek μ) and the case
    of the litre (mg/dL, mg/dl); other letters keep their case, which UCUM gives meaning (mU/L is not MU/L)."""
    return None if unit is None else unicodedata.normalize("NFKC", unit).replace(" ", "").replace("L", "l")


def same_unit(here: str | None, there: str | None) -> bool:
    """Whether two systems' units agree, compared by `unit_key`; a unit written in capitals only (MIMIC-III and many
    HL7 v2 feeds write every unit so: `MG/DL`) has lost its case, so against it case is not compared."""
    if unit_key(here) == unit_key(there):
        return True
    shouting = here is not None and there is not None and (here == here.upper() or there == there.upper())
    return shouting and unit_key(here).casefold() == unit_key(there).casefold()


def check_units(vocabulary: FeatureVocabulary, units: Mapping[str, str], where: str) -> None:
    """Refuse data whose features are in other units than a model vocabulary's statistics: normalised with the wrong
    statistics, creatinine in µmol/L would read 88 times too high. Features of unknown unit, here or there, pass."""
    for name, unit in units.items():
        if name in vocabulary and unit:
            known = vocabulary.spec_of(name).unit
            if known and not same_unit(known, unit):
                raise ValueError(f"{where}: feature {name!r} is in {unit!r}, but the model's vocabulary has it in "
                                 f"{known!r}: convert it (unit_conversions / --unit_conversions) before scoring")
