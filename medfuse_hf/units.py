"""Units of clinical measurements, compared as two hospitals' systems write them: the loader, the tokenizer and the
transfer code all decide "same unit?" here, so that they never disagree."""

import unicodedata
from collections.abc import Iterable, Mapping

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


def check_units(
    vocabulary: FeatureVocabulary, units: Mapping[str, str], where: str, present: Iterable[str] = (),
    assume_model_units: bool = False, *, events_without_unit: Mapping[str, int] | None = None,
    whose: str = "the model's", vouching_flag: str = "--assume_model_units",
) -> dict[str, str]:
    """Refuse data whose features are in other units than a model vocabulary's statistics: normalised with the wrong
    statistics, creatinine in µmol/L would read 88 times too high. A unit read can be compared; a feature the data
    holds (`present`) with no unit given, or with some events that gave none (`events_without_unit`, read in the
    unit its other events give), where the model knows its unit, cannot, and is refused too unless
    `assume_model_units` (the data owner's word that its values are in the model's units). Returns those features,
    each with the model's unit that its values are then read in. `whose` and `vouching_flag` name the vocabulary and
    the flag in the refusal (a pretraining corpus checks an export against the clinical catalogue's units)."""
    for name, unit in units.items():
        if name in vocabulary and unit:
            known = vocabulary.spec_of(name).unit
            if known and not same_unit(known, unit):
                raise ValueError(f"{where}: feature {name!r} is in {unit!r}, but {whose} vocabulary has it "
                                 f"in {known!r}: convert it (unit_conversions / --unit_conversions) first")
    partly = events_without_unit or {}
    assumed = {name: vocabulary.spec_of(name).unit for name in sorted(present)
               if name in vocabulary and vocabulary.spec_of(name).unit and (not units.get(name) or partly.get(name))}
    if assumed and not assume_model_units:
        listed = ", ".join(f"{name} ({unit}{f'; {partly[name]:,} of its events' if units.get(name) else ''})"
                           for name, unit in list(assumed.items())[:8])
        raise ValueError(f"{where} gives no unit for {len(assumed)} of {whose} features (or for some of their "
                         f"events), whose values are read in these units: {listed}"
                         f"{', ...' if len(assumed) > 8 else ''}. A value in another unit would be read wrongly "
                         "without a word: map the table's unit column (--columns ...,unit=<column>) and give every "
                         f"event a unit to have each checked, or, if every value is in {whose} units, say so with "
                         f"{vouching_flag}")
    return assumed


def units_assumed_note(assumed: Mapping[str, str]) -> str:
    """What a run says of the features `check_units` let through on `--assume_model_units`."""
    return ("read in the model's units where the table gives none (--assume_model_units): "
            + ", ".join(f"{name} in {unit}" for name, unit in assumed.items()))
