print("pvmm")
