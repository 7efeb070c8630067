"""Kernel durations from `ncu --csv --metrics gpu__time_duration.sum` over consecutive decode
launches: cut into steps at the embedding lookup (a step's first launch), then
the median kernel time per step and per kernel name, to set against the step's wall time."""
import csv
import sys
from collections import defaultdict

lines = [l for l in open(sys.argv[1]) if l.startswith('"')]
rows = list(csv.DictReader(lines))
rows = [r for r in rows if r.get('Metric Name') == 'gpu__time_duration.sum']
if not rows:
    sys.exit('no kernel rows in ' + sys.argv[1])
unit = rows[0]['Metric Unit']
scale = {'ns': 1e-3, 'nsecond': 1e-3, 'us': 1.0, 'usecond': 1.0, 'ms': 1e3, 'msecond': 1e3}[unit]
k = [(r['Kernel Name'].split('(')[0][:50], r['Grid Size'], float(r['Metric Value'].replace(',', '')) * scale) for r in rows]
starts = [i for i, x in enumerate(k) if 'EmbedKernel' in x[0]]
steps = [k[a:b] for a, b in zip(starts, starts[1:])]
if not steps:
    sys.exit('no whole step among %d launches' % len(k))
tot = sorted(sum(x[2] for x in s) for s in steps)
print('%d whole steps, %d launches each; kernel time per step (median) %.1f us' % (len(steps), len(steps[0]), tot[len(tot) // 2]))
per = defaultdict(list)
for s in steps:
    acc = defaultdict(float)
    cnt = defaultdict(int)
    for name, grid, t in s:
        acc[name + ' ' + grid] += t
        cnt[name + ' ' + grid] += 1
    for n in acc:
        per[n].append((acc[n], cnt[n]))
for n, v in sorted(per.items(), key=lambda kv: -sorted(kv[1])[len(kv[1]) // 2][0]):
    v.sort()
    t, c = v[len(v) // 2]
    print('%9.1f us  x%-3d %s' % (t, c, n))
# The same per kernel name over all grid sizes (serving steps vary their grids with the batch).
byname = defaultdict(list)
for s in steps:
    acc = defaultdict(float)
    for name, grid, t in s:
        acc[name] += t
    for n in acc:
        byname[n].append(acc[n])
print('per kernel name, all grids (median us per step):')
for n, v in sorted(byname.items(), key=lambda kv: -sorted(kv[1])[len(kv[1]) // 2]):
    v.sort()
    print('%9.1f us  %s' % (v[len(v) // 2], n))
