// The serial shell.

enum Shell {
    static func run() -> Never {
        while true {
            Console.write("pvos> ")
            let args = words(Console.readLine())
            guard let command = args.first else { continue }
            execute(command, args.dropFirst())
        }
    }

    static func execute(_ command: [UInt8], _ args: ArraySlice<[UInt8]>) {
        if matches(command, "help") {
            Console.write("commands: help echo info uptime poweroff panic\n")
        } else if matches(command, "echo") {
            var first = true
            for a in args {
                if !first { Console.put(32) }
                Console.write(a)
                first = false
            }
            Console.put(10)
        } else if matches(command, "info") {
            info()
        } else if matches(command, "uptime") {
            let ms = Platform.uptimeMilliseconds()
            Console.write("uptime: ")
            Console.writeDecimal(ms / 1000)
            Console.put(46)
            Console.writeDecimal(ms % 1000, minDigits: 3)
            Console.write(" s\n")
        } else if matches(command, "poweroff") {
            Platform.powerOff(ExitStatus.ok)
        } else if matches(command, "panic") {
            // Not covered by the 4 GiB identity map (PML4 slot 224): #PF, vector 14.
            _ = read64(0x0000_7000_0000_0000)
        } else {
            Console.write("unknown command: ")
            Console.write(command)
            Console.put(10)
        }
    }

    static func info() {
        Console.write("platform: ")
        Console.write(Platform.name)
        Console.write("\ncpus: 1\nmemory: ")
        Console.writeDecimal((Pages.totalRAM + (1 << 19)) >> 20)   // nearest MiB
        Console.write(" MiB\ntsc: ")
        Console.writeDecimal(Platform.tscKHz)
        Console.write(" kHz (")
        Console.write(Platform.tscSource)
        Console.write(")\ncmdline: ")
        Console.write(Kernel.cmdline)
        Console.put(10)
        for o in Kernel.options {
            Console.write("option: ")
            Console.write(o.key)
            Console.put(61)
            Console.write(o.value)
            Console.put(10)
        }
    }
}
