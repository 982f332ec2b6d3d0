hog = []
while True:
    hog.append(bytearray(32 << 20))
    for i in range(0, len(hog[-1]), 4096):  # touch every page so it is really resident
        hog[-1][i] = 1
