import Testing
import VMControl

@Suite struct LifecycleMachineTests {
    @Test func bootPauseResumeStop() {
        var m = LifecycleMachine()
        #expect(m.state == .created)
        #expect(throws: LifecycleConflict.self) { try m.check(.pause) }
        #expect(m.enter(.starting) && m.enter(.running))
        #expect(throws: Never.self) { try m.check(.pause) }
        #expect(m.enter(.paused))
        #expect(throws: LifecycleConflict(operation: .pause, state: .paused)) { try m.check(.pause) }
        #expect(throws: Never.self) { try m.check(.resume) }
        #expect(m.enter(.running))
        #expect(m.enter(.stopping))
        // A second stop changes nothing and is not an error; pause and reboot are.
        #expect(throws: Never.self) { try m.check(.stop) }
        #expect(throws: LifecycleConflict.self) { try m.check(.pause) }
        #expect(throws: LifecycleConflict.self) { try m.check(.reboot) }
        #expect(m.enter(.stopped))
        #expect(m.state.isFinal)
    }

    @Test func finalStatesAllowNothing() {
        for final in [VMState.stopped, .crashed] {
            var m = LifecycleMachine()
            #expect(m.enter(final))
            for op in LifecycleOperation.allCases {
                #expect(throws: LifecycleConflict.self) { try m.check(op) }
            }
            for next in VMState.allCases { #expect(!m.enter(next), "\(final) -> \(next)") }
        }
    }

    @Test func rebootGoesThroughStarting() {
        var m = LifecycleMachine()
        _ = m.enter(.starting); _ = m.enter(.running)
        #expect(throws: Never.self) { try m.check(.reboot) }
        #expect(m.enter(.starting) && m.enter(.running))
        _ = m.enter(.paused)
        #expect(throws: Never.self) { try m.check(.reboot) }
        #expect(m.enter(.starting))
    }

    @Test func edgesThatDoNotExist() {
        #expect(!LifecycleMachine.allows(from: .created, to: .running))
        #expect(!LifecycleMachine.allows(from: .created, to: .paused))
        #expect(!LifecycleMachine.allows(from: .stopping, to: .running))
        #expect(!LifecycleMachine.allows(from: .stopping, to: .stopping))
        #expect(!LifecycleMachine.allows(from: .paused, to: .paused))
        #expect(LifecycleMachine.allows(from: .created, to: .crashed))
        #expect(LifecycleMachine.allows(from: .paused, to: .stopping))
    }

    @Test func killIsAllowedUntilTheEnd() {
        var m = LifecycleMachine()
        for s in [VMState.starting, .running, .paused, .stopping] {
            #expect(throws: Never.self) { try m.check(.kill) }
            _ = m.enter(s)
        }
        _ = m.enter(.stopped)
        #expect(throws: LifecycleConflict.self) { try m.check(.kill) }
    }
}
