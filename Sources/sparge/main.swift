import SpargeRing
print("sparge")
