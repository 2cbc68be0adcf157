"""GenEval's position rule: where one object lies relative to another. The world states a relation only
when it is clear, and the scorer judges a drawn one by the same rule."""

import math

RELATIONS = ("left of", "right of", "above", "below")
CLEAR = 0.15  # a relation is stated only when GenEval's score is this far from its 0.5 threshold


def relation_scores(a, b) -> dict[str, float]:
    """GenEval's position rule for `a` relative to `b` (anything with x, y, width, height): the centre
    offset, shrunk towards zero by 0.1 x (width_a + width_b) per axis, over the centre distance. A
    relation holds when its score exceeds 0.5, so a diagonal neighbour can be both left of and above."""
    dx, dy = a.x - b.x, a.y - b.y
    distance = math.hypot(dx, dy)
    if distance == 0:
        return dict.fromkeys(RELATIONS, 0.0)
    sx = math.copysign(max(abs(dx) - 0.1 * (a.width + b.width), 0.0), dx) / distance
    sy = math.copysign(max(abs(dy) - 0.1 * (a.height + b.height), 0.0), dy) / distance
    return {"left of": -sx, "right of": sx, "above": -sy, "below": sy}


def relations(a, b) -> set[str]:
    return {relation for relation, score in relation_scores(a, b).items() if score > 0.5}


def clear_relation(a, b) -> str | None:
    """The one relation of a to b, if it holds with a margin and no other comes close."""
    scores = relation_scores(a, b)
    best = max(scores, key=scores.get)
    if scores[best] > 0.5 + CLEAR and all(s < 0.5 - CLEAR for r, s in scores.items() if r != best):
        return best
    return None
