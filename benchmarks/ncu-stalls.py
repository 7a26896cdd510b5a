"""Warp-stall samples of an Nsight Compute report, summed: by reason, and the 25 instructions with most samples.

Usage: python3 benchmarks/ncu-stalls.py NAME.sass.csv...   (the `--page source --csv --print-source sass` export
that benchmarks/gpu-sm90-profile.sh writes).
"""
import csv,sys,collections
for name in sys.argv[1:]:
    rows=list(csv.reader(open(name)))
    hdr=rows[1]; data=rows[2:]
    idx={h:i for i,h in enumerate(hdr)}
    stalls=[h for h in hdr if h.startswith('stall_') and 'Not Issued' not in h]
    tot=collections.Counter(); total=0
    per=[]
    for r in data:
        if len(r)<len(hdr)-5: continue
        try: s=int(r[idx['Warp Stall Sampling (All Samples)']])
        except: continue
        total+=s
        for h in stalls:
            try: tot[h]+=int(r[idx[h]])
            except: pass
        per.append((s,r[idx['Source']].strip(),{h:int(r[idx[h]]) for h in stalls if r[idx[h]].isdigit() and int(r[idx[h]])>0}))
    print('==',name,'samples',total)
    for h,v in tot.most_common(12): print(f'  {h:24s} {v:8d} {100*v/total:5.1f}%')
    per.sort(key=lambda x:-x[0])
    for s,src,d in per[:25]:
        top=sorted(d.items(),key=lambda x:-x[1])[:3]
        print(f'  {100*s/total:5.2f}% {src[:60]:60s} {top}')
