"""The readable trace (titles beside ids, scores a person reads, one line per stop) and the bridge choice
(dates and demonyms after names unless the question asks for them)."""

from adapters.coupling_index import CouplingGraph
from adapters.lexicon import scene_keys
from graph.cli import describe
from nodes.expand import asked_kinds, bridge_kind, bridges
from state.models import Coupling, Formula, Probe, Recalled


def rec(sid, title, score, dense=0.5):
    return Recalled(id=sid, text=title, title=title, score=score, dense=dense)


def test_trace_names_scenes_and_reads_scores_as_percent_of_the_top():
    titles = {"s-1": "Gaby: A True Story", "s-2": "Luis Mandoki"}
    woke = describe("resonate", {"active": {"s-1": rec("s-1", "Gaby: A True Story", 8.0, 0.61),
                                            "s-2": rec("s-2", "Luis Mandoki", 4.0, 0.42)}}, 5)
    assert woke == "[resonate] woke: Gaby: A True Story (100%, cos 0.61); Luis Mandoki (50%, cos 0.42)"
    formula = Formula(id="f-1", chain=["s-1", "s-2"], summary="x",
                      links=[Coupling(source="s-1", target="s-2", relation="luis mandoki")])
    line = describe("formulate", {"formulas": [formula]}, 5, titles)
    assert line.startswith("[formulate] f-1: Gaby: A True Story -> Luis Mandoki (via luis mandoki)")
    old = Probe(id="p1-old", text="q a", depth=1, reason="bridge", target="a", parent="s-1")
    new = Probe(id="p2-new", text="q luis mandoki", depth=2, reason="bridge", target="luis mandoki", parent="s-1")
    lines = describe("expand", {"probes": [old, new], "pending": ["p2-new"]}, 5, titles).splitlines()
    assert lines == ["[expand] depth 2: 1 probe(s)",
                     '    - p2-new bridge "luis mandoki" from [Gaby: A True Story]']
    assert describe("expand", {"pending": [], "frontier": []}, 5) is None  # the stop event is the one line


def test_dates_and_demonyms_come_after_names_unless_asked():
    g = CouplingGraph()
    scenes = [("a", "Gaby", "Gaby is a Polish film released on September 8, 1987 and directed by Luis Mandoki."),
              ("b", "Luis Mandoki", "Luis Mandoki is a Polish director. He was seen on September 8, 1990."),
              ("c", "Polish cinema", "Polish films of September 8 and Luis Mandoki.")]
    for sid, title, text in scenes:
        g.add(sid, title, scene_keys(text, title))
    g.ready()
    assert bridge_kind(g, "september 8") == "date" and bridge_kind(g, "luis mandoki") == "name"
    assert bridge_kind(g, "polish") == "demonym"
    assert asked_kinds("When was the director of Gaby born?") >= {"date"}
    assert "demonym" in asked_kinds("What nationality is the director of Gaby?")
    assert "demonym" not in asked_kinds("Who directed Gaby?")
    names = bridges(g, "a", "Who directed Gaby?", set(), 3)
    assert names[0] == "luis mandoki"
    noise = [e for e in names if bridge_kind(g, e) != "name"]
    assert names == [e for e in names if e not in noise] + noise  # names first, whatever their rarity
