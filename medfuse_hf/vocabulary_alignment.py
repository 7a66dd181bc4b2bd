"""Two hospitals' vocabularies side by side: which feature here is which there (`align`), and one vocabulary that
keeps a checkpoint's ids and adds a cohort's new features (`merge`), the step before `extend_vocabulary`."""

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .feature_vocabulary import FeatureSpec, FeatureVocabulary


@dataclass
class AlignmentReport:
    """How one vocabulary's features map onto another's.

    ``matched`` maps this vocabulary's names to the other's; ``how`` says whether each match was by name,
    code or alias, so a person can audit a transfer before trusting it.
    """

    matched: dict[str, str]
    how: dict[str, str]
    only_here: list[str]
    only_there: list[str]

    def __str__(self) -> str:
        return (
            f"{len(self.matched)} matched, {len(self.only_here)} only here, {len(self.only_there)} only there"
        )


def align(
    here: FeatureVocabulary, other: FeatureVocabulary, methods: Sequence[str] = ("name", "code", "alias")
) -> AlignmentReport:
    """Match the features of ``here`` to ``other``'s by canonical name, then code, then alias (only the ``methods``
    given).

    Each method is one pass over all features, so an alias never takes a feature of ``other`` that another
    feature here matches exactly by name or code; each feature of ``other`` is matched at most once. A name
    match whose two codes differ waits until after the code pass: a feature coded like it may be the real
    counterpart (serum glucose 2345-7 against blood glucose 2339-0); if none is, the names still match.
    """
    tables = {
        "name": (lambda spec: [spec.name], {spec.name: spec.name for spec in other}),
        "code": (lambda spec: [spec.code], {spec.code: spec.name for spec in other if spec.code}),
        "alias": (lambda spec: [spec.name, *spec.aliases],
                  {key: other.spec_of(feature_id).name for key, feature_id in other.keys().items()}),
    }

    def codes_differ(spec: FeatureSpec, there: str) -> bool:
        code = other.spec_of(there).code
        return bool(spec.code and code and spec.code != code)

    passes = []  # (method, whether its name matches have differing codes; None: not a name pass)
    for method in methods:
        passes.append((method, False if method == "name" else None))
        if (method == "code" and "name" in methods) or (method == "name" and "code" not in methods):
            passes.append(("name", True))
    matched, how = {}, {}
    taken: set[str] = set()
    for method, conflicting in passes:
        keys_of, table = tables[method]
        for spec in here:
            if spec.name in matched:
                continue
            target = next((table[key] for key in keys_of(spec) if key in table and table[key] not in taken), None)
            if target is not None and conflicting is not None and codes_differ(spec, target) != conflicting:
                continue
            if target is not None:
                matched[spec.name], how[spec.name] = target, method
                taken.add(target)
    only_here = [spec.name for spec in here if spec.name not in matched]
    only_there = [spec.name for spec in other if spec.name not in taken]
    return AlignmentReport(matched=matched, how=how, only_here=only_here, only_there=only_there)


def merge(here: FeatureVocabulary, other: FeatureVocabulary) -> FeatureVocabulary:
    """``here``, unchanged ids first, followed by ``other``'s features it does not have.

    Keeping existing ids stable is what lets a checkpoint trained on ``here`` load into a model built on
    the merged vocabulary. A feature of ``other`` matched to one here (`align`) joins it under its own name and
    aliases. A spelling of ``other``'s that names another feature here is refused: the merged vocabulary would read
    its events as that feature's, with that feature's statistics.
    """
    report = align(here, other)
    merged = FeatureVocabulary(replace(spec, aliases=list(spec.aliases)) for spec in here)
    counterpart = {there: name for name, there in report.matched.items()}
    for spec in other:
        mine = counterpart.get(spec.name)
        spellings = [spec.name, *spec.aliases]
        clash = next((key for key in spellings if key in merged and merged.spec_of(key).name != mine), None)
        if clash is not None:
            taken = merged.spec_of(clash)
            matched = (f"matched by {report.how[mine]} to {mine!r}" if mine is not None else "matched to no feature")
            raise ValueError(f"feature {spec.name!r}{_coded(spec)}, {matched} in the vocabulary it joins, would have "
                             f"its events read as those of {taken.name!r}{_coded(taken)}, which {clash!r} names "
                             "there: rename it (or give it its counterpart's name) first")
        if mine is None:
            merged.add(replace(spec, aliases=list(spec.aliases)))
        else:
            for key in spellings:
                if key not in merged:
                    merged.add_alias(mine, key)
    return merged


def _coded(spec: FeatureSpec) -> str:
    return f" (code {spec.code})" if spec.code else ""
