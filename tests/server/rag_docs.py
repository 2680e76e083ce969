"""Small documents with known answers for the vector-store and RAG tests (written for these tests)."""

from __future__ import annotations

LIGHTHOUSE = """\
The Harbor Point lighthouse stands on a granite ledge at the mouth of the bay. It was first lit in 1871,
and its keeper, Margaret Ellison, tended the lamp for thirty-two years. The tower is fifty-four feet tall
and is painted with red and white bands so that sailors can recognise it during the day.
The original lens was a fourth-order Fresnel lens made in Paris. It focused the light of a kerosene lamp
into a beam visible eighteen nautical miles out to sea. In 1938 the lamp was electrified, and in 1987 the
station was automated, so no keeper has lived on the ledge since then.
Visitors reach the lighthouse by a causeway that floods at high tide. The keeper's cottage is now a small
museum that shows the logbooks, the brass oil cans and a model of the schooner Osprey, which ran aground
on the ledge in a storm in 1869, two years before the light was built. Storm waves sometimes break over
the lantern room, and the glass was replaced after the hurricane of 1954.
"""

SOURDOUGH = """\
A sourdough starter is a mixture of flour and water in which wild yeast and lactic acid bacteria live
together. Feed it every day with equal weights of flour and water, and keep it at about twenty-four
degrees Celsius. A healthy starter doubles in size within six hours of a feeding and smells pleasantly sour.
To bake a loaf, mix five hundred grams of bread flour with three hundred and fifty grams of water and one
hundred grams of active starter. Let the dough rest for thirty minutes, then add ten grams of salt. Fold
the dough every half hour for two hours, shape it, and proof it overnight in the refrigerator.
Bake the loaf in a covered cast-iron pot at two hundred and fifty degrees Celsius for twenty minutes, then
uncover it and bake for another twenty-five minutes until the crust is deep brown. Cool the bread for at
least an hour before slicing, because the crumb keeps setting as the steam escapes.
"""

KERNELS = """\
Vector instructions let a processor apply one operation to many numbers at once. AVX2 registers hold
eight single-precision floats, and AVX-512 registers hold sixteen. A fused multiply-add instruction
computes a times b plus c with a single rounding, which makes dot products both faster and more accurate.
Matrix multiplication kernels keep a small block of the output in registers and stream the inputs through
the caches. The block size is chosen so that the working set fits in the level-one data cache, which is
typically thirty-two or forty-eight kilobytes per core on recent x86 processors.
Quantized kernels store weights as four-bit or eight-bit integers with one scale per block of thirty-two
values. The VNNI extension adds instructions that multiply unsigned and signed bytes and accumulate the
products into thirty-two-bit integers, which speeds up int8 inference considerably.
"""

DOCS = {"lighthouse.txt": LIGHTHOUSE, "sourdough.txt": SOURDOUGH, "kernels.txt": KERNELS}

# (question, the file that answers it, a word the answer contains)
QUESTIONS = [
    ("Who tended the lamp of the Harbor Point lighthouse?", "lighthouse.txt", "Ellison"),
    ("How long should the sourdough loaf bake uncovered?", "sourdough.txt", "twenty-five"),
    ("How many floats does an AVX-512 register hold?", "kernels.txt", "sixteen"),
    ("Which schooner ran aground on the ledge in 1869?", "lighthouse.txt", "Osprey"),
    ("At what temperature should a sourdough starter be kept?", "sourdough.txt", "twenty-four"),
    ("What does the VNNI extension accumulate products into?", "kernels.txt", "thirty-two-bit"),
]
