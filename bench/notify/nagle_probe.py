"""Does SMTP's write pattern (the message, then CRLF.CRLF in a second write)
cost a delayed ACK on loopback? The evidence for bench/README.md's
"Notifications (issue 14)": lettre writes that way on a socket without
TCP_NODELAY. Run: python3 bench/notify/nagle_probe.py
"""
import socket, threading, time
def server(ls):
    c, _ = ls.accept(); f = c.makefile("rb")
    c.sendall(b"220 ok\r\n")
    while True:
        line = f.readline()
        if not line: return
        if line.startswith(b"DATA"):
            c.sendall(b"354 go\r\n")
            while f.readline() not in (b".\r\n", b""): pass
            c.sendall(b"250 queued\r\n")
        else:
            c.sendall(b"250 ok\r\n")
def run(nodelay, n=50):
    ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen()
    threading.Thread(target=server, args=(ls,), daemon=True).start()
    s = socket.create_connection(ls.getsockname())
    if nodelay: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb"); f.readline()
    body = b"Subject: x\r\nMessage-ID: <a@b>\r\n\r\n" + b"hello world " * 30
    t = time.perf_counter()
    for _ in range(n):
        for cmd in (b"NOOP\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n", b"DATA\r\n"):
            s.sendall(cmd); f.readline()
        s.sendall(body); s.sendall(b"\r\n.\r\n"); f.readline()
    return (time.perf_counter() - t) / n * 1000
print("per message, Nagle on (lettre's default): %.2f ms" % run(False))
print("per message, TCP_NODELAY:                 %.2f ms" % run(True))
