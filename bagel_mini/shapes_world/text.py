"""How the world writes English: articles, GenEval's plurals, counts, lists, and a scene's caption."""

from bagel_mini.shapes_world.scene import Scene

NUMBERS = ("zero", "one", "two", "three", "four")


def article(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")  # GenEval's rule


def count_phrase(count: int, shape: str) -> str:
    return article(shape) if count == 1 else f"{NUMBERS[count]} {plural(shape)}"


def listing(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} and {phrases[-1]}"


def caption(scene: Scene) -> str:
    return f"{listing([article(o.name) for o in scene.objects])} on {article(scene.background)} background"
